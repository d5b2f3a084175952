"""Direct preference optimisation: losses on the policy's and the reference's log-probabilities
of a preference pair's two answers, with no reward model (shapes: see `rlhfkit.algorithms`).

Every loss reads the same inputs: the summed log-probability of the chosen and of the
rejected answer under the policy and under the reference model, and the answers' token
counts. `DPO_LOSSES` maps a name to its function; `dpo_loss` picks one and computes the
statistics every loss reports (the implicit rewards and their accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class PairLogps(NamedTuple):
    """Log-probabilities of a batch of preference pairs.

    Attributes:
        policy_chosen, policy_rejected: summed log-probabilities of each answer's tokens
            under the policy (with their graph while training). Shape: (B,)
        reference_chosen, reference_rejected: the same under the reference model. (B,)
        chosen_tokens, rejected_tokens: each answer's token count. (B,)
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


class DPOLoss(NamedTuple):
    """A preference loss with detached statistics (names as TRL logs them).

    Attributes:
        loss: scalar to minimise (the mean over pairs).
        chosen_rewards: implicit reward of each chosen answer. Shape: (B,)
        rejected_rewards: implicit reward of each rejected answer. Shape: (B,)
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


class LossSettings(NamedTuple):
    """The settings a loss reads: beta (the weight of the KL to the reference, or SimPO's
    reward scale), label_smoothing (the assumed share of flipped labels) and SimPO's
    target margin gamma."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5


def _sequence_logratios(logps: PairLogps, per_token: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y|x) - log pi_ref(y|x) of the chosen and the rejected answers, per token
    (divided by the answer's length) when `per_token`. Shape: (B,) each"""
    chosen = logps.policy_chosen.float() - logps.reference_chosen.float()
    rejected = logps.policy_rejected.float() - logps.reference_rejected.float()
    if per_token:
        chosen = chosen / logps.chosen_tokens.float().clamp(min=1.0)
        rejected = rejected / logps.rejected_tokens.float().clamp(min=1.0)
    return chosen, rejected


def sigmoid_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """-log sigmoid(beta * h), h = (log-ratio of chosen) - (log-ratio of rejected);
    Rafailov et al. 2023, eq. 7. With label smoothing e: (1 - e) of that plus e of the loss
    of the flipped pair (conservative DPO, Mitchell 2023). Shape: (B,) -> (B,)"""
    chosen, rejected = _sequence_logratios(logps, per_token=False)
    logits = settings.beta * (chosen - rejected)
    e = settings.label_smoothing
    return -(1 - e) * F.logsigmoid(logits) - e * F.logsigmoid(-logits)


def robust_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """Unbiased loss under label noise e: ((1 - e) * l(h) - e * l(-h)) / (1 - 2e), l the
    DPO loss; Chowdhury et al. 2024, eq. 8. Shape: (B,) -> (B,)"""
    chosen, rejected = _sequence_logratios(logps, per_token=False)
    logits = settings.beta * (chosen - rejected)
    e = settings.label_smoothing
    return (-(1 - e) * F.logsigmoid(logits) + e * F.logsigmoid(-logits)) / (1 - 2 * e)


def ipo_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """(h - 1 / (2 beta))^2 on per-token log-ratios; Azar et al. 2023, eq. 17 (per-token
    averages as TRL computes it). Shape: (B,) -> (B,)"""
    chosen, rejected = _sequence_logratios(logps, per_token=True)
    return (chosen - rejected - 1 / (2 * settings.beta)) ** 2


def hinge_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """max(0, 1 - beta * h) (SLiC-HF's calibration loss; Zhao et al. 2023, eq. 2).
    Shape: (B,) -> (B,)"""
    chosen, rejected = _sequence_logratios(logps, per_token=False)
    return torch.relu(1 - settings.beta * (chosen - rejected))


def simpo_loss(logps: PairLogps, settings: LossSettings) -> torch.Tensor:
    """-log sigmoid(beta * (mean log pi(y_w) - mean log pi(y_l)) - gamma), no reference;
    Meng et al. 2024, eq. 6 (label smoothing as in the sigmoid loss). Shape: (B,) -> (B,)"""
    logits = settings.beta * _simpo_rewards_gap(logps) - settings.simpo_gamma
    e = settings.label_smoothing
    return -(1 - e) * F.logsigmoid(logits) - e * F.logsigmoid(-logits)


def _simpo_rewards_gap(logps: PairLogps) -> torch.Tensor:
    chosen = logps.policy_chosen.float() / logps.chosen_tokens.float().clamp(min=1.0)
    rejected = logps.policy_rejected.float() / logps.rejected_tokens.float().clamp(min=1.0)
    return chosen - rejected


DPO_LOSSES: dict[str, Callable[[PairLogps, LossSettings], torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "robust": robust_loss,
    "simpo": simpo_loss,
    "hinge": hinge_loss,
}
"""The losses `loss_type` names."""

REFERENCE_FREE = ("simpo",)
"""Losses that never read the reference model's log-probabilities."""


def implicit_rewards(
    logps: PairLogps, loss_type: str, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewards a loss implies for the chosen and the rejected answers, detached:
    beta * (log pi - log pi_ref) (Rafailov et al. 2023, eq. 5); per token for IPO; for
    SimPO beta * mean log pi. Shape: (B,) each"""
    with torch.no_grad():
        if loss_type in REFERENCE_FREE:
            chosen = logps.policy_chosen.float() / logps.chosen_tokens.float().clamp(min=1.0)
            rejected = logps.policy_rejected.float() / logps.rejected_tokens.float().clamp(min=1.0)
        else:
            chosen, rejected = _sequence_logratios(logps, per_token=loss_type == "ipo")
        return beta * chosen, beta * rejected


def dpo_loss(logps: PairLogps, loss_type: str, settings: LossSettings) -> DPOLoss:
    """The mean loss `loss_type` (a key of `DPO_LOSSES`) over a batch of pairs, and the
    implicit rewards. An unknown name is a ValueError listing the others."""
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {tuple(DPO_LOSSES)}")
    losses = DPO_LOSSES[loss_type](logps, settings)  # (B,)
    chosen, rejected = implicit_rewards(logps, loss_type, settings.beta)
    return DPOLoss(losses.mean(), chosen, rejected)
