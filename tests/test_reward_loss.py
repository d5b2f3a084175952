import math

import pytest
import torch

from rlhfkit.algorithms.reward import bradley_terry_loss


def test_bradley_terry_hand_worked():
    # diffs: 2 - 0 = 2 and 0 - 1 = -1
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(-1) = log(1 + e^1) = 1.313262
    out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert out.rank_loss.item() == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    assert out.accuracy.item() == 0.5
    assert out.margin.item() == pytest.approx(0.5)
    assert out.loss.item() == pytest.approx(out.rank_loss.item())


def test_margin_is_subtracted_inside_the_sigmoid():
    # diff 2, margin 1: -log sigmoid(1) = log(1 + e^-1) = 0.313262
    out = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    assert out.rank_loss.item() == pytest.approx(0.313262, abs=1e-6)
    assert out.accuracy.item() == 1.0  # accuracy ignores the margin


def test_centering_term_adds_mean_squared_sum():
    # rank loss at diff 0 is log 2; centering: 0.5 * mean((1+1)^2, (-1-1)^2) = 0.5 * 4 = 2
    out = bradley_terry_loss(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0]), None, 0.5)
    assert out.rank_loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.loss.item() == pytest.approx(math.log(2) + 2.0, abs=1e-6)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).loss.backward()
    # d/dc of -log sigmoid(c - r) at 0 is -(1 - sigmoid(0)) = -0.5
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


def test_inputs_are_not_modified():
    chosen, rejected = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    before = (chosen.clone(), rejected.clone())
    bradley_terry_loss(chosen, rejected, torch.tensor([0.1, 0.1]), 0.1)
    assert torch.equal(chosen, before[0]) and torch.equal(rejected, before[1])
