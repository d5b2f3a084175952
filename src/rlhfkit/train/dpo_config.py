"""The parameters of `rlhfkit train-dpo` (`DPOConfig`): names as in OpenAI's preference
fine-tuning (`beta`, `batch_size`, `learning_rate_multiplier`, `n_epochs`) and TRL's
DPOConfig (`loss_type`, `label_smoothing`, `max_steps`) where they have them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlhfkit.algorithms.dpo import DPO_LOSSES, LossSettings
from rlhfkit.config import check, param, param_default, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.models.compiled import compile_param
from rlhfkit.models.reward import ALL_LINEAR
from rlhfkit.train.params import OptimizationParams, PairParams, RunParams

DPO_BASE_LEARNING_RATE = 1e-4
"""Learning rate at learning_rate_multiplier=1.0 (the peak, after warm-up): LoRA's usual
rate; full fine-tuning wants about a tenth of it."""


@dataclass
class DPOConfig(RunParams, OptimizationParams, PairParams, DataConfig):
    """Parameters of `rlhfkit train-dpo`."""

    loss_type: str = param(
        "sigmoid",
        "sigmoid (DPO), ipo, robust (DPO unbiased under label noise label_smoothing), simpo "
        "(no reference, length-normalised; wants beta near 2) or hinge (SLiC).",
        choices=tuple(DPO_LOSSES),
    )
    beta: float = param(
        0.1,
        "Weight of the KL divergence to the reference (the base model): lower lets the "
        "policy move further. For simpo: the reward scale.",
    )
    label_smoothing: float = param(
        0.0,
        "Assumed share of flipped labels, in [0, 0.5): sigmoid and simpo mix in the flipped "
        "pair's loss (conservative DPO); robust corrects for it.",
    )
    simpo_gamma: float = param(0.5, "SimPO's target reward margin gamma (loss_type=simpo).")
    n_epochs: float = param(1.0, "Passes over the training pairs (max_steps, when set, wins).")
    max_steps: int = param(0, "Optimizer steps to run; 0: as many as n_epochs passes take.")
    learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {DPO_BASE_LEARNING_RATE:g}."
    )
    lora_rank: int = param(8, "LoRA rank of the policy adapter.")
    lora_alpha: float = param(16.0, "LoRA scaling numerator (scale = alpha / rank).")
    lora_targets: list[str] = param(
        list(ALL_LINEAR), "Module names that get LoRA adapters (comma-separated)."
    )
    full_finetune: bool = param(
        False,
        "Train every weight instead of a LoRA adapter (the reference log-probabilities are "
        "computed before the first step, so no second copy of the model is kept).",
    )
    eval_every: int = param(
        25, "Evaluate on the validation (else held-out) pairs every N steps (and at the end)."
    )
    save_merged: bool = param(True, "Also write the adapter merged into the base (model/).")
    warmup_steps: int = param_default(OptimizationParams, "warmup_steps", 5)
    lr_schedule: str = param_default(OptimizationParams, "lr_schedule", "cosine")
    save_every: int = param_default(OptimizationParams, "save_every", 25)
    compile: bool | None = compile_param()
    output_dir: str = param_default(RunParams, "output_dir", "runs/dpo")

    def validate(self) -> None:
        super().validate()
        check(self.beta > 0, "beta", self.beta, "must be positive (e.g. 0.1)")
        check(
            0.0 <= self.label_smoothing < 0.5,
            "label_smoothing",
            self.label_smoothing,
            "must be in [0, 0.5) (the share of labels assumed flipped)",
        )
        check(self.n_epochs > 0, "n_epochs", self.n_epochs, "must be positive")
        check(self.max_steps >= 0, "max_steps", self.max_steps, "must be >= 0 (0: n_epochs)")
        check(
            self.learning_rate_multiplier > 0,
            "learning_rate_multiplier",
            self.learning_rate_multiplier,
            "must be positive",
        )
        check(self.lora_rank >= 1, "lora_rank", self.lora_rank, "must be at least 1")
        check(self.eval_every >= 1, "eval_every", self.eval_every, "must be at least 1")
        check(bool(self.lora_targets), "lora_targets", self.lora_targets, "name at least one")

    @property
    def learning_rate(self) -> float:
        return DPO_BASE_LEARNING_RATE * self.learning_rate_multiplier

    @property
    def eval_interval_steps(self) -> int:
        return self.eval_every

    @property
    def loss_settings(self) -> LossSettings:
        return LossSettings(self.beta, self.label_smoothing, self.simpo_gamma)

    def total_steps(self, train_pairs: int) -> int:
        """max_steps when set, else ceil(n_epochs * pairs / batch_size)."""
        if self.max_steps:
            return self.max_steps
        # rounded first: 1.1 * 100 / 10 is 11.000000000000002 in floating point, not 12
        return max(1, math.ceil(round(self.n_epochs * train_pairs / self.batch_size, 9)))

    def resume_values(self) -> dict[str, Any]:
        """The settings a checkpoint keeps and a resume compares."""
        return to_dict(self)
