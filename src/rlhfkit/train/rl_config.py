"""The parameters every `rlhfkit train-rl` method shares (`RLCommonConfig`).

Each method's own parameters extend it: PPO's in `train.ppo` (Vertex AI's names), GRPO's
and RLOO's in `train.grpo` (OpenAI's names). `train.methods` maps a method name to both.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from rlhfkit.algorithms.ppo import KL_ESTIMATORS
from rlhfkit.config import check, param, param_default, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.graders.sandbox import resolve_mode, sandbox_param
from rlhfkit.models.compiled import compile_param
from rlhfkit.models.reward import ALL_LINEAR
from rlhfkit.train import METHODS
from rlhfkit.train.params import OptimizationParams, RunParams

logger = logging.getLogger(__name__)


@dataclass
class RLCommonConfig(RunParams, OptimizationParams, DataConfig, ABC):
    """Parameters every `rlhfkit train-rl` method shares."""

    method: str = param(
        "ppo",
        "RL algorithm: ppo (one answer per prompt, a critic, GAE) or grpo / rloo (several "
        "answers per prompt, group-relative advantages, no critic).",
        choices=METHODS,
    )
    prompt_dataset: str | None = param(
        None, "Prompt dataset (file, folder or glob) in any supported format."
    )
    eval_fraction: float = param(
        0.1, "Fraction of prompt_dataset held out for evaluation when no held-out file is set."
    )
    eval_prompts: int = param(64, "Most held-out prompts answered at each evaluation.")
    reward_model: str | None = param(
        None, "Reward-model directory written by train-reward (its reward_model/ folder)."
    )
    kl_coeff: float = param(0.0, "Weight of the KL penalty to the base model (0: none).")
    batch_size: int = param(8, "Prompts per step.")
    grader: str | dict | None = param(
        None,
        "Grader file (YAML or JSON, see Graders), or the grader itself as a mapping (as in an "
        "OpenAI job body): the reward, instead of reward_model.",
    )
    grader_sandbox: str | None = sandbox_param()
    kl_estimator: str = param(
        "k1",
        "Per-token KL estimator: k1 (log ratio) or k3 (never negative).",
        choices=("k1", "k3"),
    )
    micro_batch_size: int = param(
        8, "Answers per forward/backward pass; gradients accumulate over a mini-batch."
    )
    cliprange: float = param(0.2, "Clip range of the policy ratio.")
    temperature: float = param(0.7, "Sampling temperature of the rollouts.")
    top_p: float = param(1.0, "Nucleus sampling: keep the smallest token set with this mass.")
    top_k: int = param(0, "Sample among the k most likely tokens (0: all).")
    missing_eos_penalty: float = param(
        0.0,
        "Subtracted from the score of an answer that never ends within "
        "target_sequence_length (0: off).",
    )
    lora_rank: int = param(8, "LoRA rank of the policy adapter.")
    lora_alpha: float = param(16.0, "LoRA scaling numerator (scale = alpha / rank).")
    lora_targets: list[str] = param(
        list(ALL_LINEAR), "Module names that get LoRA adapters (comma-separated)."
    )
    sample_every: int = param(10, "Log a few decoded prompts, answers and scores every N steps.")
    compile: bool | None = compile_param()
    save_merged: bool = param(True, "Also write the adapter merged into the base (model/).")
    output_dir: str = param_default(RunParams, "output_dir", "runs/rl")
    eval_samples: int = param(
        1, "Answers per held-out prompt: 1 is the greedy answer, more are sampled (seeded)."
    )
    keep_best: int = param(
        0, "Checkpoints with the best held-out reward kept besides the newest (0: newest only)."
    )

    def validate(self) -> None:
        super().validate()
        if self.grader_sandbox is not None:
            resolve_mode(self.grader_sandbox, "grader_sandbox")
        check(
            self.prompt_dataset is not None,
            "prompt_dataset",
            None,
            "set it to a prompt file, folder or glob, e.g. prompt_dataset=prompts.jsonl",
        )
        check(
            not (self.grader and self.reward_model),
            "grader",
            self.grader,
            "set either grader or reward_model, not both",
        )
        positive = (
            "micro_batch_size", "eval_prompts", "lora_rank", "sample_every", "eval_samples",
        )  # fmt: skip
        for name in positive:
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(self.kl_coeff >= 0, "kl_coeff", self.kl_coeff, "must be >= 0")
        check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, "k1 or k3")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        check(self.cliprange > 0, "cliprange", self.cliprange, "must be positive")
        check(
            0.0 < self.eval_fraction < 1.0,
            "eval_fraction",
            self.eval_fraction,
            "must be between 0 and 1 (exclusive)",
        )
        check(self.keep_best >= 0, "keep_best", self.keep_best, "must be >= 0")

    def resume_values(self) -> dict[str, Any]:
        """The settings a checkpoint keeps and a resume compares."""
        return to_dict(self)

    @property
    @abstractmethod
    def held_out_dataset(self) -> str | None:
        """The file of held-out prompts, if one was given."""

    @property
    @abstractmethod
    def learning_rate(self) -> float:
        """The peak learning rate (the method's base rate times its multiplier)."""

    @property
    @abstractmethod
    def eval_interval_steps(self) -> int:
        """Evaluate on the held-out prompts every this many steps."""

    @abstractmethod
    def total_steps(self, train_prompts: int) -> int:
        """Optimizer steps of the whole run, given the number of training prompts."""
