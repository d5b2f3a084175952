"""Reward-model losses (shapes: see the legend in `rlhfkit.algorithms`)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class RewardLoss(NamedTuple):
    """Bradley-Terry loss with detached statistics.

    Attributes:
        loss: scalar to minimise (rank loss plus the centering term).
        rank_loss: mean -log sigmoid(r_chosen - r_rejected - margin), detached.
        accuracy: fraction of pairs with r_chosen > r_rejected, a tie counting 1/2, detached.
        margin: mean r_chosen - r_rejected, detached.
    """

    loss: torch.Tensor
    rank_loss: torch.Tensor
    accuracy: torch.Tensor
    margin: torch.Tensor


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coeff: float = 0.0,
) -> RewardLoss:
    """Pairwise ranking loss -log sigmoid(r_c - r_r - m), plus coeff * mean((r_c + r_r)^2).

    Bradley & Terry (1952); margin as in Llama 2 (Touvron et al. 2023, eq. 2); the centering
    term as in Eisenstein et al. (2023), which keeps rewards near zero.

    Args:
        chosen: rewards of the preferred responses. Shape: (B,)
        rejected: rewards of the other responses. Shape: (B,)
        margin: optional required gap per pair (0 where absent). Shape: (B,)
        center_coeff: weight of the centering term; 0 turns it off.
    """
    diff = chosen.float() - rejected.float()  # (B,)
    shifted = diff if margin is None else diff - margin.float()
    rank_loss = -F.logsigmoid(shifted).mean()
    loss = rank_loss
    if center_coeff:
        loss = loss + center_coeff * ((chosen.float() + rejected.float()) ** 2).mean()
    return RewardLoss(
        loss=loss,
        rank_loss=rank_loss.detach(),
        accuracy=((diff > 0).float() + 0.5 * (diff == 0).float()).mean().detach(),
        margin=diff.mean().detach(),
    )


class HeadFit(NamedTuple):
    """A linear reward head fitted on fixed features (see `fit_linear_head`).

    Attributes:
        weight: the head's weights; rewards are weight . features. Shape: (H,)
        l2: the L2 weight chosen by cross-validation (on standardised features).
        cv_rank_loss: mean held-out rank loss over the folds at that L2 weight.
        cv_accuracy: mean held-out accuracy over the folds at that L2 weight (ties 1/2).
    """

    weight: torch.Tensor
    l2: float
    cv_rank_loss: float
    cv_accuracy: float


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""L2 weights `fit_linear_head` chooses from (the features are standardised first)."""


def fit_linear_head(
    diffs: torch.Tensor,
    margins: torch.Tensor | None = None,
    l2_grid: tuple[float, ...] = L2_GRID,
    folds: int = 5,
) -> HeadFit:
    """The Bradley-Terry head on fixed features: L2-regularised logistic regression.

    With frozen features f, the reward r = w . f makes the rank loss
    -log sigmoid(w . (f_chosen - f_rejected) - m) a logistic regression on the feature
    differences, which L-BFGS solves in moments. Each feature is scaled to unit standard
    deviation; the L2 weight is the one of `l2_grid` with the lowest rank loss on held-out
    folds (pair i is in fold i % folds), and the head is then fitted on every pair.

    Args:
        diffs: features of the chosen answer minus those of the rejected one. Shape: (B, H)
        margins: required gap per pair (0 where absent). Shape: (B,)
        l2_grid: candidate L2 weights (of the mean loss, on standardised features).
        folds: cross-validation folds (at most the number of pairs, at least 2).
    """
    diffs = diffs.detach().double()
    margins = torch.zeros(len(diffs), dtype=torch.float64) if margins is None else margins.double()
    scale = diffs.std(0).clamp(min=1e-6) if len(diffs) > 1 else torch.ones(diffs.shape[1])
    x = diffs / scale  # (B, H)
    fold = torch.arange(len(x)) % max(2, min(folds, len(x)))
    best: tuple[float, float, float] | None = None  # (rank loss, accuracy, l2)
    for l2 in l2_grid:
        losses, accuracies = [], []
        for k in fold.unique().tolist():
            train, held = fold != k, fold == k
            w = _logistic_fit(x[train], margins[train], l2)
            logits = x[held] @ w - margins[held]
            losses.append(-F.logsigmoid(logits).mean().item())
            diff = x[held] @ w
            accuracies.append(((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item())
        score = (sum(losses) / len(losses), sum(accuracies) / len(accuracies), l2)
        if best is None or score[0] < best[0]:
            best = score
    assert best is not None
    weight = _logistic_fit(x, margins, best[2]) / scale
    return HeadFit(weight.float(), best[2], best[0], best[1])


def _logistic_fit(x: torch.Tensor, margins: torch.Tensor, l2: float) -> torch.Tensor:
    """argmin_w mean(-log sigmoid(x w - m)) + l2 |w|^2 (x: (B, H), m: (B,)), by L-BFGS."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -F.logsigmoid(x @ w - margins).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()
