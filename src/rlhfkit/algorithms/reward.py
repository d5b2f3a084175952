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
