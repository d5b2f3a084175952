import math

import pytest
import torch

from rlhfkit.algorithms.grpo import (
    group_advantages,
    loss_mask,
    zero_std_fraction,
    zero_std_groups,
)
from rlhfkit.algorithms.ppo import (
    aggregate,
    clipped_surrogate,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    loss_count,
    masked_mean,
    masked_var,
    masked_whiten,
    normalised_loss,
    policy_loss,
    sequence_log_ratio,
    token_rewards,
    value_loss,
)

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_masked_mean_and_var_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    # real entries 1, 2, 3, 4, 5: mean 3, squared deviations 4+1+0+1+4 = 10
    assert masked_mean(x, MASK).item() == pytest.approx(3.0)
    assert masked_mean(x, MASK, dim=1).tolist() == pytest.approx([2.0, 4.5])
    assert masked_var(x, MASK).item() == pytest.approx(10 / 4)
    assert masked_var(x, MASK, unbiased=False).item() == pytest.approx(10 / 5)


def test_whitening_hand_worked():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    white = masked_whiten(x, MASK)
    std = math.sqrt(2.5)
    expected = [[-2 / std, -1 / std, 0.0], [1 / std, 2 / std, 0.0]]
    assert white.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    kept = masked_whiten(x, MASK, shift_mean=False)
    assert kept[0, 2].item() == pytest.approx(3.0, abs=1e-6)  # mean added back
    assert kept[1, 2].item() == 0.0  # padding stays 0


def test_kl_estimators_hand_worked():
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.4)])
    # log r = ref - logp = [-log 2, log 2]
    k1 = kl_estimate(logp, ref, "k1")
    assert k1.tolist() == pytest.approx([math.log(2), -math.log(2)])
    k2 = kl_estimate(logp, ref, "k2")
    assert k2.tolist() == pytest.approx([0.5 * math.log(2) ** 2] * 2)
    k3 = kl_estimate(logp, ref, "k3")
    # r - 1 - log r: r = 0.5 -> -0.5 + log 2 = 0.193147; r = 2 -> 1 - log 2 = 0.306853
    assert k3.tolist() == pytest.approx([0.193147, 0.306853], abs=1e-6)
    assert kl_estimate(logp, logp, "k3").abs().max().item() == 0.0
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    rewards = token_rewards(torch.tensor([1.0, 2.0]), kl, MASK, kl_coeff=0.1)
    expected = [[-0.01, -0.02, 1.0 - 0.03], [-0.04, 2.0 - 0.05, 0.0]]
    assert rewards.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_gae_hand_worked():
    # one sequence of 3 tokens, gamma 0.9, lambda 0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # delta_2 = 1 - 0.4 = 0.6;             A_2 = 0.6
    # delta_1 = 0 + 0.9*0.4 - 0.2 = 0.16;  A_1 = 0.16 + 0.45*0.6 = 0.43
    # delta_0 = 0 + 0.9*0.2 - 0.5 = -0.32; A_0 = -0.32 + 0.45*0.43 = -0.1265
    assert adv[0].tolist() == pytest.approx([-0.1265, 0.43, 0.6], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.3735, 0.63, 1.0], abs=1e-6)


def test_gae_ends_the_episode_at_the_last_real_token():
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    values = torch.tensor([[0.3, 0.6, 7.0]])  # the padded position's value is ignored
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # A_1 = 1 - 0.6 = 0.4; A_0 = 0 + 0.6 - 0.3 + 0.4 = 0.7 (= total reward 1 - V_0)
    assert adv[0].tolist() == pytest.approx([0.7, 0.4, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)


def test_policy_loss_clips_hand_worked():
    old = torch.zeros(1, 3)
    new = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    out = policy_loss(new, old, adv, torch.ones(1, 3), cliprange=0.2)
    # token 0: ratio 1.5, A=1: max(-1.5, -1.2) = -1.2 (clipped)
    # token 1: ratio 0.5, A=1: max(-0.5, -0.8) = -0.5 (not clipped: pessimistic side)
    # token 2: ratio 1.1, A=-2: max(2.2, 2.2) = 2.2 (inside the range)
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert out.clipfrac.item() == pytest.approx(1 / 3)
    log_ratios = [math.log(1.5), math.log(0.5), math.log(1.1)]
    assert out.approx_kl.item() == pytest.approx(0.5 * sum(r * r for r in log_ratios) / 3)
    new.requires_grad_(True)
    policy_loss(new, old, adv, torch.ones(1, 3), 0.2).loss.backward()
    # the clipped token gets no gradient; d(-A*ratio)/dlogp = -A*ratio for the others
    assert new.grad[0].tolist() == pytest.approx([0.0, -0.5 / 3, 2.2 / 3], abs=1e-6)


def test_value_loss_clips_hand_worked():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[2.0, 1.1]])
    returns = torch.tensor([[3.0, 0.0]])
    out = value_loss(new, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (2-3)^2 = 1; clipped V = 1.2, (1.2-3)^2 = 3.24 -> 3.24
    # token 1: unclipped 1.21; clipped V = 1.1 (inside), 1.21 -> 1.21
    assert out.loss.item() == pytest.approx(0.5 * (3.24 + 1.21) / 2, abs=1e-6)
    assert out.clipfrac.item() == pytest.approx(0.5)


def test_explained_variance_and_entropy():
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.ones(1, 3)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 3) + 2.0, returns, mask) == pytest.approx(0.0)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    assert entropy_from_logits(logits).tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)


def test_aggregation_token_mean_and_sequence_mean():
    values = torch.tensor([[1.0, 3.0, 9.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # token mean: (1 + 3 + 4) / 3 = 8/3; sequence mean: ((1 + 3) / 2 + 4) / 2 = 3
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(8 / 3)
    assert aggregate(values, mask, "sequence_mean").item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(values, mask, "sum")


def test_group_advantages_grpo_rloo_and_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # group 0: mean 0.5; unbiased std = sqrt((4 * 0.25) / 3) = 0.57735
    grpo = group_advantages(rewards, "grpo", scale=True, eps=0.0)
    s = (1 / 3) ** 0.5
    assert torch.allclose(grpo[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / s)
    # Dr. GRPO: no std scaling
    dr = group_advantages(rewards, "grpo", scale=False)
    assert torch.allclose(dr[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    # RLOO: 1 - (0 + 0 + 1) / 3 = 2/3; 0 - (1 + 0 + 1) / 3 = -2/3
    rloo = group_advantages(rewards, "rloo", scale=False)
    assert torch.allclose(rloo[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    # a group where every answer scored the same has zero advantage, scaled or not
    assert torch.equal(group_advantages(rewards, "grpo")[1], torch.zeros(4))
    assert zero_std_fraction(rewards) == 0.5
    with pytest.raises(ValueError, match="grpo"):
        group_advantages(rewards, "ppo")
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(rewards[:, :1], "grpo")


def test_policy_loss_sequence_mean_weighs_answers_equally():
    # ratio 1 everywhere: loss = -mean(A); answer 0 has 2 tokens with A=1, answer 1 one token
    # with A=-1. token mean: (1 + 1 - 1) / 3 * -1 = -1/3; sequence mean: -(1 + -1) / 2 = 0
    logprobs = torch.zeros(2, 2)
    advantages = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    token = policy_loss(logprobs, logprobs, advantages, mask, 0.2, "token_mean")
    sequence = policy_loss(logprobs, logprobs, advantages, mask, 0.2, "sequence_mean")
    assert token.loss.item() == pytest.approx(-1 / 3)
    assert sequence.loss.item() == pytest.approx(0.0)


def test_clip_higher_hand_worked():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    out = clipped_surrogate(new, old, adv, torch.ones(1, 4), 0.2, cliprange_high=0.28)
    # ratio 1.5, A=1: max(-1.5, -1.28) = -1.28 (clipped at 1 + 0.28, not 1.2)
    # ratio 0.5, A=1: max(-0.5, -0.8) = -0.5; ratio 1.1, A=-2: max(2.2, 2.2) = 2.2
    # ratio 0.7, A=-1: max(0.7, 0.8) = 0.8 (clipped at 1 - 0.2)
    assert out.losses[0].tolist() == pytest.approx([-1.28, -0.5, 2.2, 0.8], abs=1e-6)
    assert out.clipfrac.item() == pytest.approx(2 / 4)
    # no upper bound of its own: the lower one, as policy_loss has always done
    same = clipped_surrogate(new, old, adv, torch.ones(1, 4), 0.2)
    assert same.losses[0, 0].item() == pytest.approx(-1.2)


def test_sequence_level_ratio_is_gspo_hand_worked():
    old = torch.zeros(2, 3)
    new = torch.tensor([[0.2, -0.1, 9.0], [0.2, -0.1, 9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # answer log ratios 0.2 and -0.1 (the third position is padding): mean 0.05
    assert sequence_log_ratio(new, old, mask)[0, :2].tolist() == pytest.approx([0.05] * 2)
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3])
    out = clipped_surrogate(new, old, adv, mask, 0.2, level="sequence")
    # s = exp(0.05) = 1.0512711 on both real tokens of each answer, inside [0.8, 1.2]
    s = math.exp(0.05)
    assert out.losses[:, :2].tolist() == [pytest.approx([-s, -s]), pytest.approx([s, s])]
    assert out.ratio.item() == pytest.approx(s) and out.clipfrac.item() == 0.0
    # GSPO: loss_i = -A_i * s_i with s_i = exp((lp_0 + lp_1) / 2), so d loss_i / d lp_t =
    # -A_i * s_i / 2; the grpo loss is the mean of the two answers' losses: -A_i * s_i / 4
    # = -+0.2628178 on each real token, 0 on padding
    normalised_loss(out.losses, mask, "grpo", 3).backward()
    assert new.grad[0].tolist() == pytest.approx([-s / 4, -s / 4, 0.0], abs=1e-6)
    assert new.grad[1].tolist() == pytest.approx([s / 4, s / 4, 0.0], abs=1e-6)
    # token level clips token 0 (exp(0.2) = 1.2214 > 1.2) where the sequence level does not
    token = clipped_surrogate(new, old, adv, mask, 0.2)
    assert token.clipfrac.item() == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="token"):
        clipped_surrogate(new, old, adv, mask, 0.2, level="answer")


def test_loss_types_hand_worked():
    values = torch.tensor([[1.0, 3.0, 9.0], [4.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the third answer is masked out
    # grpo: ((1 + 3) / 2 + 4) / 2 = 3 (the masked answer is not an answer)
    assert normalised_loss(values, mask, "grpo", 4).item() == pytest.approx(3.0)
    # bnpo and dapo: (1 + 3 + 4) / 3 tokens = 8/3
    assert normalised_loss(values, mask, "bnpo", 4).item() == pytest.approx(8 / 3)
    assert normalised_loss(values, mask, "dapo", 4).item() == pytest.approx(8 / 3)
    # dr_grpo: 8 / (2 answers x max length 4) = 1
    assert normalised_loss(values, mask, "dr_grpo", 4).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dr_grpo"):
        normalised_loss(values, mask, "token_mean", 4)


def test_micro_batches_add_up_to_the_mini_batch_loss_hand_worked():
    # the mini-batch of the test above in two micro-batches: [answer 0], [answers 1, 2]
    values = torch.tensor([[1.0, 3.0, 9.0], [4.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    micro = [slice(0, 1), slice(1, 3)]

    def accumulated(loss_type):
        counts = [loss_count(mask[rows], loss_type) for rows in micro]
        return sum(
            normalised_loss(values[rows], mask[rows], loss_type, 4).item() * count / sum(counts)
            for rows, count in zip(micro, counts, strict=True)
        )

    # dapo weighs by tokens (2 and 1): 2 * 2/3 + 4 * 1/3 = 8/3, the mini-batch's token mean
    assert [loss_count(mask[rows], "dapo") for rows in micro] == [2.0, 1.0]
    assert accumulated("dapo") == pytest.approx(8 / 3)
    # grpo and dr_grpo weigh by answers (1 and 1): (2 + 4) / 2 = 3 and (4/4 + 4/4) / 2 = 1
    assert accumulated("grpo") == pytest.approx(3.0)
    assert accumulated("dr_grpo") == pytest.approx(1.0)
    # bnpo normalises each micro-batch by its own tokens: (2 + 4) / 2 = 3, not 8/3
    assert accumulated("bnpo") == pytest.approx(3.0)


def test_default_loss_is_the_same_arithmetic_as_before():
    generator = torch.Generator().manual_seed(0)
    logprobs, old, adv = (torch.randn(6, 5, generator=generator) for _ in range(3))
    mask = (torch.rand(6, 5, generator=generator) > 0.3).float()
    mask[:, 0] = 1.0
    for aggregation, loss_type in (("token_mean", "bnpo"), ("sequence_mean", "grpo")):
        before = policy_loss(logprobs, old, adv, mask, 0.2, aggregation)
        terms = clipped_surrogate(logprobs, old, adv, mask, 0.2, 0.2, "token")
        assert torch.equal(normalised_loss(terms.losses, mask, loss_type, 5), before.loss)
        assert torch.equal(aggregate(terms.losses, mask, aggregation), before.loss)


def test_loss_mask_leaves_out_truncated_answers_and_skipped_groups():
    rewards = torch.tensor([[1.0, 0.0], [2.0, 2.0]])  # two groups of two answers
    skipped = zero_std_groups(rewards)
    assert skipped.tolist() == [False, True] and zero_std_fraction(rewards) == 0.5
    response = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    truncated = torch.tensor([False, True, False, False])
    # answer 1 was cut at the length limit, answers 2 and 3 form the skipped group
    mask = loss_mask(response, 2, truncated, skipped)
    assert mask.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert loss_mask(response, 2, truncated=truncated).tolist()[2:] == response.tolist()[2:]
    assert loss_mask(response, 2) is response  # nothing asked: the response mask itself


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_token_logprobs_equal_log_softmax_and_its_gradient(autocast):
    """`token_logprobs` (logits a chunk at a time, recomputed in the backward pass) gives
    what autograd through log_softmax and gather gives: values, entropies, gradients."""
    from rlhfkit.models.policy import token_logprobs

    torch.manual_seed(0)
    chunk = 256
    positions = chunk + 57  # a full chunk and a part
    hidden = torch.randn(3, positions, 16, requires_grad=True)
    weight = torch.randn(300, 16).to(torch.bfloat16 if autocast else torch.float32)
    targets = torch.randint(0, 300, (3, positions))
    upstream = torch.randn(3, positions)
    with torch.autocast("cpu", enabled=autocast):
        chosen, entropy = token_logprobs(hidden, weight, targets, 0.7, True, chunk_tokens=chunk)
    (chosen * upstream).sum().backward()
    ours, hidden.grad = hidden.grad, None
    with torch.autocast("cpu", enabled=autocast):
        log_probs = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float() / 0.7, -1)
    expected = log_probs.gather(-1, targets[..., None]).squeeze(-1)
    (expected * upstream).sum().backward()
    assert torch.equal(chosen, expected.detach())
    torch.testing.assert_close(entropy, -(log_probs.exp() * log_probs).sum(-1).detach())
    torch.testing.assert_close(ours, hidden.grad, rtol=1e-5, atol=1e-5)
    assert entropy.requires_grad is False
