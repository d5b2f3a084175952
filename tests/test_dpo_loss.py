"""The DPO losses, each worked by hand on one or two pairs."""

import math

import pytest
import torch

from rlhfkit.algorithms.dpo import DPO_LOSSES, LossSettings, PairLogps, dpo_loss


def pairs(pc, pr, rc, rr, nc=(1.0,), nr=(1.0,)) -> PairLogps:
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return PairLogps(t(pc), t(pr), t(rc), t(rr), t(nc), t(nr))


# one pair: policy log-probs -10 (chosen), -14 (rejected); reference -12 and -12
# log-ratios: chosen -10 - (-12) = 2, rejected -14 - (-12) = -2, h = 2 - (-2) = 4
ONE = pairs([-10.0], [-14.0], [-12.0], [-12.0], [4.0], [8.0])


def test_sigmoid_hand_worked():
    # beta 0.5: beta * h = 2; -log sigmoid(2) = log(1 + e^-2) = 0.126928
    out = dpo_loss(ONE, "sigmoid", LossSettings(beta=0.5))
    assert out.loss.item() == pytest.approx(0.126928, abs=1e-6)
    # implicit rewards: 0.5 * 2 = 1 and 0.5 * -2 = -1
    assert out.chosen_rewards.tolist() == [1.0]
    assert out.rejected_rewards.tolist() == [-1.0]


def test_sigmoid_label_smoothing_mixes_in_the_flipped_pair():
    # e 0.1: 0.9 * log(1 + e^-2) + 0.1 * log(1 + e^2) = 0.9 * 0.126928 + 0.1 * 2.126928
    out = dpo_loss(ONE, "sigmoid", LossSettings(beta=0.5, label_smoothing=0.1))
    assert out.loss.item() == pytest.approx(0.9 * 0.126928 + 0.1 * 2.126928, abs=1e-6)


def test_robust_hand_worked():
    # (0.9 * log(1 + e^-2) - 0.1 * log(1 + e^2)) / (1 - 0.2)
    # = (0.114235 - 0.212693) / 0.8 = -0.123072
    out = dpo_loss(ONE, "robust", LossSettings(beta=0.5, label_smoothing=0.1))
    assert out.loss.item() == pytest.approx((0.9 * 0.126928 - 0.1 * 2.126928) / 0.8, abs=1e-6)
    # without noise it is the DPO loss
    plain = dpo_loss(ONE, "robust", LossSettings(beta=0.5)).loss.item()
    assert plain == pytest.approx(0.126928, abs=1e-6)


def test_ipo_uses_per_token_log_ratios():
    # per token: chosen 2 / 4 tokens = 0.5, rejected -2 / 8 tokens = -0.25, h = 0.75
    # beta 0.5: target 1 / (2 * 0.5) = 1; loss (0.75 - 1)^2 = 0.0625
    out = dpo_loss(ONE, "ipo", LossSettings(beta=0.5))
    assert out.loss.item() == pytest.approx(0.0625, abs=1e-6)
    assert out.chosen_rewards.tolist() == [0.25]  # 0.5 * 0.5


def test_hinge_hand_worked():
    # beta 0.1: 1 - 0.1 * 4 = 0.6; beta 0.5: 1 - 2 < 0, so 0
    assert dpo_loss(ONE, "hinge", LossSettings(beta=0.1)).loss.item() == pytest.approx(0.6)
    assert dpo_loss(ONE, "hinge", LossSettings(beta=0.5)).loss.item() == 0.0


def test_simpo_ignores_the_reference_and_normalises_by_length():
    # mean log-probs: -10 / 4 = -2.5 and -14 / 8 = -1.75; gap -0.75
    # beta 2, gamma 0.5: 2 * -0.75 - 0.5 = -2; -log sigmoid(-2) = log(1 + e^2) = 2.126928
    out = dpo_loss(ONE, "simpo", LossSettings(beta=2.0, simpo_gamma=0.5))
    assert out.loss.item() == pytest.approx(2.126928, abs=1e-6)
    other_reference = ONE._replace(reference_chosen=torch.tensor([5.0]))
    assert dpo_loss(other_reference, "simpo", LossSettings(beta=2.0)).loss.item() == (
        pytest.approx(out.loss.item())
    )
    assert out.chosen_rewards.tolist() == [-5.0]  # 2 * -2.5


def test_mean_over_pairs_and_gradient_direction():
    # two pairs, h = 0 each: every loss's sigmoid form gives log 2
    logps = pairs([-3.0, -5.0], [-3.0, -5.0], [-3.0, -5.0], [-3.0, -5.0], [2, 2], [2, 2])
    chosen = logps.policy_chosen.clone().requires_grad_(True)
    rejected = logps.policy_rejected.clone().requires_grad_(True)
    out = dpo_loss(logps._replace(policy_chosen=chosen, policy_rejected=rejected), "sigmoid",
                   LossSettings(beta=1.0))  # fmt: skip
    assert out.loss.item() == pytest.approx(math.log(2))
    out.loss.backward()
    # d/dc of mean(-log sigmoid(c - r)) at 0: -0.5 / 2 pairs = -0.25 each
    assert chosen.grad.tolist() == pytest.approx([-0.25, -0.25])
    assert rejected.grad.tolist() == pytest.approx([0.25, 0.25])


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ValueError, match=r"sigmoid.*ipo.*robust.*simpo.*hinge"):
        dpo_loss(ONE, "kto", LossSettings())
    assert set(DPO_LOSSES) == {"sigmoid", "ipo", "robust", "simpo", "hinge"}
