"""The parameters of `rlhfkit train-reward` (`RewardConfig`) and the reward-model spec they give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhfkit.config import check, param, param_default, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.models.compiled import compile_param
from rlhfkit.models.reward import (
    ALL_LINEAR,
    POOLINGS,
    RewardModelSpec,
)
from rlhfkit.train.params import OptimizationParams, PairParams, RunParams

REWARD_BASE_LEARNING_RATE = 5e-4
"""Learning rate at reward_model_learning_rate_multiplier=1.0 (the peak, after warm-up)."""


@dataclass
class RewardConfig(RunParams, OptimizationParams, PairParams, DataConfig):
    """Parameters of `rlhfkit train-reward` (names shared with the pipeline)."""

    reward_model_train_steps: int = param(
        1000,
        "Optimizer steps (num_epochs, when set, wins and sets the steps instead); 0 with "
        "head_warm_start keeps the fitted head on the untrained model, with no training step.",
    )
    num_epochs: float | None = param(
        None,
        "Passes over the training pairs; when set, the run takes ceil(num_epochs * pairs / "
        "batch_size) steps and reward_model_train_steps is ignored.",
    )
    reward_model_learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {REWARD_BASE_LEARNING_RATE:g}."
    )
    lora_rank: int = param(4, "LoRA rank of the adapter.")
    lora_alpha: float = param(8.0, "LoRA scaling numerator (scale = alpha / rank).")
    lora_targets: list[str] = param(
        list(ALL_LINEAR), "Module names that get LoRA adapters (comma-separated)."
    )
    full_finetune: bool = param(False, "Train every weight instead of a LoRA adapter.")
    head_init_std: float = param(0.0, "Std of the reward head's initial weights (0: zeros).")
    head_pooling: str = param(
        "mean",
        "What the head reads: the final hidden state of the answer's last token, or the "
        "mean over the answer's tokens.",
        choices=POOLINGS,
    )
    trunk_layers: int = param(
        0,
        "Decoder layers the reward model keeps: the first N, whose output (after the final "
        "norm) the head reads; training and scoring cost about N / all layers as much. "
        "0: every layer. bench/layer_probe.py measures what each layer's output knows.",
    )
    head_warm_start: bool = param(
        True,
        "Before training, fit the head on the training pairs' features of the untrained "
        "model (L2-regularised logistic regression, L2 weight by 5-fold cross-validation).",
    )
    center_rewards_coeff: float = param(
        0.0, "Weight of the reward-centering term mean((r_c + r_r)^2); 0 turns it off."
    )
    use_margin: bool = param(True, "Subtract a row's `margin` field inside the loss when present.")
    warmup_steps: int = param_default(OptimizationParams, "warmup_steps", 10)
    lr_schedule: str = param_default(OptimizationParams, "lr_schedule", "cosine")
    log_every: int = param_default(OptimizationParams, "log_every", 10)
    eval_every: int = param(100, "Evaluate on the held-out pairs every N steps (and at the end).")
    save_every: int = param_default(OptimizationParams, "save_every", 100)
    compile: bool | None = compile_param()
    output_dir: str = param_default(RunParams, "output_dir", "runs/reward")

    def validate(self) -> None:
        super().validate()
        check(
            self.reward_model_train_steps >= (0 if self.head_warm_start else 1),
            "reward_model_train_steps",
            self.reward_model_train_steps,
            "must be at least 1 (0 only with head_warm_start=true: the fitted head alone)",
        )
        check(
            self.reward_model_learning_rate_multiplier > 0,
            "reward_model_learning_rate_multiplier",
            self.reward_model_learning_rate_multiplier,
            "must be positive",
        )
        check(self.lora_rank >= 1, "lora_rank", self.lora_rank, "must be at least 1")
        self._validate_schedule()
        check(self.trunk_layers >= 0, "trunk_layers", self.trunk_layers, "must be >= 0 (0: all)")
        check(
            bool(self.lora_targets),
            "lora_targets",
            self.lora_targets,
            "name at least one module, e.g. q_proj,v_proj",
        )

    def _validate_schedule(self) -> None:
        """Epochs, early stopping and the cadences."""
        if self.num_epochs is not None:
            check(self.num_epochs > 0, "num_epochs", self.num_epochs, "must be positive")
            check(
                self.reward_model_train_steps != 0,
                "reward_model_train_steps",
                0,
                f"asks for no training step while num_epochs={self.num_epochs:g} asks for "
                "some: unset num_epochs, or set reward_model_train_steps >= 1",
            )
        check(self.eval_every >= 1, "eval_every", self.eval_every, "must be at least 1")

    @property
    def learning_rate(self) -> float:
        return REWARD_BASE_LEARNING_RATE * self.reward_model_learning_rate_multiplier

    @property
    def eval_interval_steps(self) -> int:
        """Evaluate every this many steps."""
        return self.eval_every

    def resume_values(self) -> dict[str, Any]:
        """The settings a checkpoint keeps and a resume compares."""
        return to_dict(self)


def reward_spec(config: RewardConfig) -> RewardModelSpec:
    """The reward model's spec (base, LoRA, prompt settings, head) from its config."""
    return RewardModelSpec(
        base_model=config.large_model_reference,
        full_finetune=config.full_finetune,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_targets=list(config.lora_targets),
        instruction=config.instruction,
        prompt_sequence_length=config.prompt_sequence_length,
        target_sequence_length=config.target_sequence_length,
        use_chat_template=config.use_chat_template,
        pooling=config.head_pooling,
        trunk_layers=config.trunk_layers,
    )
