import math

import pytest
import torch

from rlhfkit.algorithms.grpo import group_advantages, zero_std_fraction
from rlhfkit.algorithms.ppo import (
    aggregate,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
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
