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


def test_linear_head_fit_is_the_regularised_logistic_regression_optimum():
    from rlhfkit.algorithms.reward import _logistic_fit, fit_linear_head

    generator = torch.Generator().manual_seed(0)
    diffs = torch.randn(200, 6, generator=generator) * torch.tensor([1.0, 5.0, 0.1, 1, 1, 1])
    truth = torch.tensor([2.0, -0.5, 10.0, 0.0, 0.0, 0.0])
    # labels from the Bradley-Terry model itself: pair i is kept as given with P sigmoid(d.w)
    keep = torch.rand(200, generator=generator) < torch.sigmoid(diffs @ truth)
    diffs = torch.where(keep[:, None], diffs, -diffs)
    fit = fit_linear_head(diffs, l2_grid=(1e-3, 1.0))
    assert fit.l2 in (1e-3, 1.0)
    # optimum on standardised features: the gradient of loss + l2 |w|^2 vanishes there
    scale = diffs.double().std(0)
    w = (fit.weight.double() * scale).requires_grad_(True)
    x = diffs.double() / scale
    loss = -torch.nn.functional.logsigmoid(x @ w).mean() + fit.l2 * (w * w).sum()
    (gradient,) = torch.autograd.grad(loss, w)
    assert gradient.abs().max().item() < 1e-4
    # a weak penalty recovers the direction of the true weights and ranks held-out pairs
    assert torch.nn.functional.cosine_similarity(fit.weight, truth, dim=0).item() > 0.9
    assert fit.cv_accuracy > 0.75
    # the fold fit is the same function on a subset
    assert _logistic_fit(x[:50], torch.zeros(50, dtype=torch.float64), 1.0).shape == (6,)


def test_linear_head_fit_subtracts_margins_and_prefers_more_penalty_on_noise():
    from rlhfkit.algorithms.reward import fit_linear_head

    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(60, 20, generator=generator)  # labels unrelated to the features
    fit = fit_linear_head(noise, l2_grid=(1e-3, 10.0))
    assert fit.l2 == 10.0  # cross-validation picks the heavier penalty on pure noise
    assert fit.weight.abs().max().item() < 0.1
    # one feature, margins of 1: the fitted diff must exceed the margin to be confident,
    # so the weight grows compared with the fit without margins
    one = torch.ones(40, 1)
    with_margin = fit_linear_head(one, torch.ones(40), l2_grid=(1e-2,), folds=2)
    without = fit_linear_head(one, l2_grid=(1e-2,), folds=2)
    assert with_margin.weight.item() > without.weight.item() > 0
