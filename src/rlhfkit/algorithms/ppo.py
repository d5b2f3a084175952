"""PPO for language models: per-token rewards, GAE, and the clipped losses, with the
variants GRPO-style training takes (asymmetric clipping, sequence-level ratios, loss types).

All tensors over response tokens are (B, A): B sequences, A response positions, with a
0/1 `mask` that is 1 on real tokens (responses are right-padded). Padding never enters a
mean, a variance or a return.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LOSS_TYPE_OF_AGGREGATION = {"sequence_mean": "grpo", "token_mean": "bnpo"}
"""The loss type each loss aggregation computes (TRL's names for them)."""
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1 (over everything, or along `dim`)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce per-token values (B, A) to a scalar: `token_mean` weighs every token alike
    (long answers count more), `sequence_mean` averages each answer's tokens first, then
    the answers (every answer counts the same)."""
    if how == "token_mean":
        return masked_mean(values, mask)
    if how == "sequence_mean":
        return masked_mean(values, mask, dim=1).mean()
    raise ValueError(f"unknown loss aggregation {how!r}; choose one of {LOSS_AGGREGATIONS}")


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected by default)."""
    mean = masked_mean(values, mask)
    squares = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        squares = squares * count / (count - 1)
    return squares


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / std over the masked entries; padding stays 0.

    With `shift_mean=False` the mean is added back (scale only).
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) at the sampled tokens.

    With log r = ref_logprobs - logprobs (tokens drawn from the policy):
    k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2 (biased, low variance),
    k3 = r - 1 - log r (unbiased and never negative).
    """
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl estimator {kind!r} is not one of {KL_ESTIMATORS}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (0 for an empty row). Shape: (B,)"""
    return (mask.sum(1) - 1).clamp(min=0).long()


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coeff: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coeff * kl on every token, plus the score on the last one.

    Args:
        scores: one scalar reward per sequence. Shape: (B,)
        kl: per-token KL estimate. Shape: (B, A)
        mask: 1 on response tokens. Shape: (B, A)
    """
    rewards = -kl_coeff * kl * mask.to(kl.dtype)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded sequences.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with
    V and A zero past the last real token (the episode ends there).

    Returns:
        advantages and returns (advantages + values), 0 on padding. Shape: (B, A) each
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio: torch.Tensor


class TokenPolicyLoss(NamedTuple):
    losses: torch.Tensor
    """The clipped surrogate at every position, padding included. Shape: (B, A)"""
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio: torch.Tensor


def sequence_log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """GSPO's log importance ratio, on every token of an answer: the mean over the answer's
    tokens of (logp - old_logp), with each token's gradient flowing through its own
    log-probability (GSPO-token: sg[log s_i] + logp - sg[logp]; Zheng et al. 2025, sec. 4.1
    and 4.3). Its value is log s_i on every token; with one advantage per answer its
    gradient is GSPO's. Shape: (B, A) -> (B, A)"""
    mask = mask.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs) * mask
    mean = log_ratio.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
    return mean.detach() + logprobs - logprobs.detach()


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_high: float | None = None,
    level: str = "token",
) -> TokenPolicyLoss:
    """Per-token clipped surrogate max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps_high))
    (Schulman et al. 2017, eq. 7; a separate upper bound is DAPO's clip-higher, Yu et al.
    2025, sec. 3.1). `cliprange_high` None: the same as `cliprange`. `level`: `token`, the
    ratio of each token, or `sequence`, GSPO's ratio of the whole answer
    (`sequence_log_ratio`). Shape: (B, A) each.

    Returns the per-token losses, the fraction of tokens where the clip was active, the
    approximate KL between new and old policy (mean of the per-token (log ratio)^2 / 2),
    and the mean ratio.
    """
    if level == "token":
        log_ratio = logprobs - old_logprobs
    elif level == "sequence":
        log_ratio = sequence_log_ratio(logprobs, old_logprobs, mask)
    else:
        raise ValueError(
            f"unknown importance sampling level {level!r}; choose one of "
            f"{IMPORTANCE_SAMPLING_LEVELS}"
        )
    high = cliprange if cliprange_high is None else cliprange_high
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + high)
    losses = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean((logprobs - old_logprobs).detach() ** 2, mask)
        mean_ratio = masked_mean(ratio.detach(), mask)
    return TokenPolicyLoss(losses, clipfrac, approx_kl, mean_ratio)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    aggregation: str = "token_mean",
) -> PolicyLoss:
    """Clipped surrogate: mean of max(-A * ratio, -A * clip(ratio, 1 +- eps)) over tokens,
    aggregated as `aggregation` says (see `aggregate`). Schulman et al. 2017, eq. 7.

    Returns the loss, the fraction of tokens where the clip was active, the approximate
    KL between new and old policy (mean of (log ratio)^2 / 2), and the mean ratio.
    """
    terms = clipped_surrogate(logprobs, old_logprobs, advantages, mask, cliprange)
    loss = aggregate(terms.losses, mask, aggregation)
    return PolicyLoss(loss, terms.clipfrac, terms.approx_kl, terms.ratio)


def answer_mean_loss(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`grpo`: each answer's token mean, then the mean over the answers that have a token
    in the mask (Shao et al. 2024, eq. 3). Shape: (B, A) -> scalar"""
    answers = (mask.sum(1) > 0).sum().to(values.dtype)
    return masked_mean(values, mask, dim=1).sum() / answers.clamp(min=1.0)


def max_length_loss(values: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    """`dr_grpo`: the sum over tokens divided by a constant, answers x `max_length` (the
    answers that have a token in the mask; Liu et al. 2025, Dr. GRPO, sec. 3.2).
    Shape: (B, A) -> scalar"""
    answers = (mask.sum(1) > 0).sum().to(values.dtype)
    total = (values * mask.to(values.dtype)).sum()
    return total / (answers.clamp(min=1.0) * max_length)


def normalised_loss(
    values: torch.Tensor, mask: torch.Tensor, loss_type: str, max_length: int
) -> torch.Tensor:
    """Per-token losses (B, A) of a micro-batch -> its loss, as `loss_type` normalises:

    - `grpo`: each answer's token mean, then the mean over answers (`answer_mean_loss`);
    - `bnpo`: the mean over the micro-batch's tokens (`masked_mean`);
    - `dr_grpo`: the token sum / (answers x `max_length`) (`max_length_loss`);
    - `dapo`: the token mean too; weighted by its share of the mini-batch's tokens
      (`loss_count`), the micro-batches add up to the mean over every token of the
      mini-batch (Yu et al. 2025, DAPO, sec. 3.3).
    """
    if loss_type == "grpo":
        return answer_mean_loss(values, mask)
    if loss_type in ("bnpo", "dapo"):
        return masked_mean(values, mask)
    if loss_type == "dr_grpo":
        return max_length_loss(values, mask, max_length)
    raise ValueError(f"unknown loss type {loss_type!r}; choose one of {LOSS_TYPES}")


def loss_count(mask: torch.Tensor, loss_type: str) -> float:
    """What a micro-batch's loss weighs in its mini-batch's, by `loss_type`: its tokens in
    the mask for `dapo`, otherwise its answers with a token in the mask. Each micro-batch's
    weight is its count over the mini-batch's. Shape: (B, A) -> scalar"""
    if loss_type == "dapo":
        return float(mask.sum())
    if loss_type in LOSS_TYPES:
        return float((mask.sum(1) > 0).sum())
    raise ValueError(f"unknown loss type {loss_type!r}; choose one of {LOSS_TYPES}")


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> ValueLoss:
    """Clipped value loss: 0.5 * mean of max((V - R)^2, (V_clipped - R)^2), where V_clipped
    stays within `cliprange_value` of the value seen at rollout time."""
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLoss(loss, clipfrac)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked entries (1: perfect critic)."""
    variance = masked_var(returns, mask)
    if variance <= 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / variance)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position. Shape: logits without V."""
    logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)
