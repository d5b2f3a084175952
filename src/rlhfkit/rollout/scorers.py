"""The reward of each sampled answer: a reward model, a grader file or a Python function.

Every scorer is called the same way, `scorer(records, answers, ended) -> Scores`, so an RL
trainer does not know which one it has. The reward model scores through
`rlhfkit.models.scoring.RewardTextScorer`, as the side-by-side autorater and the graders'
reward-model backend do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from rlhfkit.data.records import grader_item
from rlhfkit.models.reward import read_reward_spec


@dataclass
class Scores:
    """What the reward said about a batch of answers.

    Attributes:
        rewards: one score per answer (penalties applied). Shape: (B,)
        sub_rewards: per named sub-grader, its score of every answer. Shape: (B,) each
        errors: per answer, how many grader errors were recorded. Shape: (B,)
        error_kinds: count of recorded errors by kind, over the batch.
    """

    rewards: torch.Tensor
    sub_rewards: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: torch.Tensor | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)


RewardFn = Callable[[list, list[str], list[bool]], torch.Tensor]
"""(prompt records, decoded answers, whether each answer ended) -> one score each (B,)."""


def _missing_end_penalty(rewards: torch.Tensor, ended: list[bool], penalty: float) -> torch.Tensor:
    if not penalty:
        return rewards
    return rewards - penalty * (~torch.tensor(ended, dtype=torch.bool)).float()


class Scorer(Protocol):
    """What an RL trainer calls to score a batch of answers."""

    shared: bool
    """Whether the scorer reads the policy's base weights (sharded weights are gathered
    around the call)."""

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        """One score per answer, for the prompt records and whether each answer ended."""

    def close(self) -> None:
        """Release what the scorer holds (a grader's worker processes)."""


class RewardScorer:
    """Scores answers with a reward model, sharing the policy's base weights when it can.

    Args:
        folder: the reward model (a train-reward run's reward_model/ folder).
        policy_base: the policy's base reference; a LoRA reward model on the same base is
            attached to `backbone` instead of loading a second copy.
        backbone: the policy's PEFT model.
        penalty: subtracted from the score of an answer that did not end.
    """

    def __init__(
        self,
        folder: str,
        policy_base: str,
        backbone: torch.nn.Module,
        *,
        dtype: str = "auto",
        device: str = "auto",
        penalty: float = 0.0,
        micro_batch_size: int = 16,
    ):
        from rlhfkit.models.scoring import RewardTextScorer
        from rlhfkit.models.sequence_classifier import is_transformers_reward_folder

        spec = None if is_transformers_reward_folder(folder) else read_reward_spec(folder)
        self.shared = (
            spec is not None
            and spec.base_model == policy_base
            and not spec.full_finetune
            and not spec.trunk_layers
        )
        if self.shared:
            self.scorer = RewardTextScorer.attached(folder, backbone)
        else:
            self.scorer = RewardTextScorer.load(folder, dtype, device)
        self.penalty = penalty
        self.micro_batch_size = micro_batch_size

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        """One score per answer (the missing-end penalty applied)."""
        scores = self.scorer.score(
            [r.messages for r in records],
            [[a] for a in answers],
            batch_size=self.micro_batch_size,
            ended=[[e] for e in ended],
        )
        rewards = torch.tensor([s[0] for s in scores], dtype=torch.float32)
        return Scores(_missing_end_penalty(rewards, ended, self.penalty))

    def close(self) -> None:
        pass


class GraderScorer:
    """Scores answers with a grader file; the item is the whole dataset row."""

    shared = False

    def __init__(self, grader: str | dict, sandbox: str | None = None, penalty: float = 0.0):
        from rlhfkit.graders import load_grader

        self.grader = load_grader(grader, sandbox=sandbox)
        self.penalty = penalty

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        results = self.grader.grade_batch(answers, [grader_item(r) for r in records])
        rewards = torch.tensor([r.reward for r in results], dtype=torch.float32)
        names = sorted({name for r in results for name in r.sub_rewards})
        sub = {
            n: torch.tensor([r.sub_rewards.get(n, float("nan")) for r in results]) for n in names
        }
        kinds = Counter(error.get("kind", "error") for r in results for error in r.errors)
        errors = torch.tensor([len(r.errors) for r in results], dtype=torch.float32)
        return Scores(_missing_end_penalty(rewards, ended, self.penalty), sub, errors, dict(kinds))

    def close(self) -> None:
        self.grader.close()


class FunctionScorer:
    """Scores answers with a Python function (`train_rl(config, reward_fn=...)`)."""

    shared = False

    def __init__(self, reward_fn: RewardFn):
        self.reward_fn = reward_fn

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        return Scores(torch.as_tensor(self.reward_fn(records, answers, ended)).float())

    def close(self) -> None:
        pass
