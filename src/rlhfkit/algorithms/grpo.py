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


def zero_std_fraction(rewards: torch.Tensor) -> float:
    """Fraction of groups whose answers all got the same reward (they teach nothing).
    Shape: (B, G) -> scalar"""
    spread = rewards.max(1).values - rewards.min(1).values
    return float((spread == 0).float().mean())
