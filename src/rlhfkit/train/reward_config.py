"""The parameters of `rlhfkit train-reward` (`RewardConfig`) and the reward-model spec they give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhfkit.config import check, param, param_default, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.errors import ConfigError
from rlhfkit.models.compiled import compile_param
from rlhfkit.models.reward import (
    ALL_LINEAR,
    POOLINGS,
    RewardModelSpec,
)
from rlhfkit.train.params import OptimizationParams, RunParams

REWARD_BASE_LEARNING_RATE = 5e-4
"""Learning rate at reward_model_learning_rate_multiplier=1.0 (the peak, after warm-up)."""


@dataclass
class RewardConfig(RunParams, OptimizationParams, DataConfig):
    """Parameters of `rlhfkit train-reward` (names shared with the pipeline)."""

    preference_dataset: str | None = param(
        None, "Preference dataset (file, folder or glob) in any supported format."
    )
    eval_dataset: str | None = param(
        None, "Held-out preference dataset; its first 5000 rows are used for evaluation."
    )
    eval_fraction: float = param(
        0.1, "Fraction of preference_dataset held out for evaluation when eval_dataset is unset."
    )
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
    validation_fraction: float = param(
        0.1,
        "Share of the training pairs set aside for validation: evaluated every eval_every "
        "steps, and the step with the lowest validation rank loss becomes reward_model/. "
        "0: no validation; the last step is kept and the held-out pairs are evaluated instead.",
    )
    early_stopping_patience: int = param(
        0, "Stop after this many validations without a lower rank loss (0: never stop early)."
    )
    reward_model_learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {REWARD_BASE_LEARNING_RATE:g}."
    )
    batch_size: int = param(16, "Preference pairs per optimizer step.")
    micro_batch_tokens: int = param(
        1024,
        "Most padded tokens (prompt + both answers, all pairs) in one forward/backward pass; "
        "gradients accumulate up to batch_size. Raise it on a GPU, lower it to save memory.",
    )
    pad_to_multiple: int = param(
        16, "Round padded prompt and answer widths up to this multiple (bounds kernel shapes)."
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
            self.preference_dataset is not None,
            "preference_dataset",
            None,
            "set it to a preference file, folder or glob, e.g. preference_dataset=prefs.jsonl",
        )
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
        for name in ("batch_size", "micro_batch_tokens", "pad_to_multiple", "lora_rank"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(
            0.0 < self.eval_fraction < 1.0,
            "eval_fraction",
            self.eval_fraction,
            "must be between 0 and 1 (exclusive)",
        )
        check(
            0.0 <= self.validation_fraction < 1.0,
            "validation_fraction",
            self.validation_fraction,
            "must be in [0, 1): 0 turns validation off",
        )
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
        check(
            self.early_stopping_patience >= 0,
            "early_stopping_patience",
            self.early_stopping_patience,
            "must be >= 0 (0: never stop early)",
        )
        if self.early_stopping_patience and not self.validation_fraction:
            raise ConfigError(
                f"early_stopping_patience={self.early_stopping_patience} needs validation "
                "pairs: set validation_fraction > 0 (e.g. 0.1) or early_stopping_patience=0"
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
