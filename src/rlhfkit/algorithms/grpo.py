"""Group-relative policy gradient: several answers per prompt, each judged against the others.

Rewards are (B, G): B prompts, G answers sampled for each. An answer's advantage is its
reward minus a baseline computed from its own group, so no critic is needed.
"""

from __future__ import annotations

import torch

ADVANTAGE_ESTIMATORS = ("grpo", "rloo")


def group_advantages(
    rewards: torch.Tensor, estimator: str, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Advantage of every answer from its group's rewards. Shape: (B, G) -> (B, G)

    - `grpo`: reward minus the group mean (Shao et al. 2024, DeepSeekMath, eq. 3);
    - `rloo`: reward minus the mean of the other G - 1 answers (Ahmadian et al. 2024, eq. 9);
    - `scale`: divide by the group's standard deviation (unbiased) + eps, as GRPO does;
      `scale=False` with `grpo` is Dr. GRPO (Liu et al. 2025, sec. 3.2), which drops it.
    """
    group = rewards.shape[1]
    if group < 2:
        raise ValueError("group-relative advantages need at least 2 answers per prompt")
    total = rewards.sum(1, keepdim=True)  # (B, 1)
    if estimator == "grpo":
        advantages = rewards - total / group
    elif estimator == "rloo":
        advantages = rewards - (total - rewards) / (group - 1)
    else:
        raise ValueError(
            f"unknown advantage estimator {estimator!r}; choose one of {ADVANTAGE_ESTIMATORS}"
        )
    if scale:
        advantages = advantages / (rewards.std(1, keepdim=True) + eps)
    return advantages


def zero_std_groups(rewards: torch.Tensor) -> torch.Tensor:
    """Whether each group's answers all got the same reward (they teach nothing: every
    advantage is 0). Shape: (B, G) -> (B,)"""
    spread = rewards.max(1).values - rewards.min(1).values
    return spread == 0


def zero_std_fraction(rewards: torch.Tensor) -> float:
    """Fraction of groups whose answers all got the same reward (they teach nothing).
    Shape: (B, G) -> scalar"""
    return float(zero_std_groups(rewards).float().mean())


def loss_mask(
    response_mask: torch.Tensor,
    group: int,
    truncated: torch.Tensor | None = None,
    skipped_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """The answer tokens that enter the loss: `response_mask` without the answers cut at
    the length limit (`truncated`, one flag per answer: DAPO's overlong filtering) and
    without every answer of a skipped group (`skipped_groups`, one flag per group of
    `group` contiguous answers: DAPO's dynamic sampling, without its re-sampling). Yu et
    al. 2025, sec. 3.4 and 3.2. Shape: (B*G, A), (B*G,), (B,) -> (B*G, A)"""
    if truncated is None and skipped_groups is None:
        return response_mask
    keep = torch.ones(response_mask.shape[0], dtype=torch.bool, device=response_mask.device)
    if truncated is not None:
        keep = keep & ~truncated.bool().to(keep.device)
    if skipped_groups is not None:
        keep = keep & ~skipped_groups.bool().to(keep.device).repeat_interleave(group)
    return response_mask * keep[:, None].to(response_mask.dtype)
