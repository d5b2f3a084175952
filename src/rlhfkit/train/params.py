"""The parameter blocks every training command shares, each field documented once.

`RunParams`: where and how a run runs (weights' dtype, device, sharding, seed, run folder,
resume). `OptimizationParams`: the optimiser's schedule and the log and checkpoint
cadence. `PairParams`: the preference pairs of a run on pairs (held out, set aside for
validation, batched by tokens). `RewardConfig`, `DPOConfig` and the RL configs take what
they use; a config that wants another default redeclares the field with
`rlhfkit.config.param_default`, keeping its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import check, param
from rlhfkit.errors import ConfigError
from rlhfkit.train.sharding import sharding_param

LR_SCHEDULES = ("cosine", "constant", "linear")


@dataclass
class OptimizationParams:
    """AdamW's schedule and clipping; how often a run logs and writes checkpoints."""

    warmup_steps: int = param(
        0, "Linear learning-rate warm-up steps (a tenth of the run when not shorter than it)."
    )
    lr_schedule: str = param("constant", "Learning-rate decay after warm-up.", LR_SCHEDULES)
    weight_decay: float = param(0.0, "AdamW weight decay.")
    max_grad_norm: float = param(1.0, "Gradient-norm clipping (0 turns it off).")
    log_every: int = param(1, "Log training metrics every N steps.")
    save_every: int = param(50, "Write a checkpoint every N steps (and at the end).")

    def validate(self) -> None:
        super().validate()  # the next config in the class's bases
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        for name in ("log_every", "save_every"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")


@dataclass
class RunParams:
    """Where a run runs and what it writes to."""

    dtype: str = param(
        "auto", "Weights of the frozen base: auto, bf16 or fp32.", ("auto", "bf16", "fp32")
    )
    device: str = param("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    sharding: str = sharding_param()
    seed: int = param(
        0,
        "Seed of the run's random streams: initialisation, data order, held-out split and, "
        "in RL, sampling (rlhfkit.seeding lists them).",
    )
    output_dir: str = param(
        "runs/run", "Run directory: config, metrics, checkpoints and the trained model."
    )
    resume: bool = param(False, "Continue from the last checkpoint in output_dir.")


@dataclass
class PairParams:
    """The preference pairs of a run trained on pairs (the reward model, DPO): where they
    are, which are held out or set aside for validation, how they are batched."""

    preference_dataset: str | None = param(
        None, "Preference dataset (file, folder or glob) in any supported format."
    )
    eval_dataset: str | None = param(
        None, "Held-out preference dataset; its first 5000 rows are used for evaluation."
    )
    eval_fraction: float = param(
        0.1, "Fraction of preference_dataset held out for evaluation when eval_dataset is unset."
    )
    validation_fraction: float = param(
        0.1,
        "Share of the training pairs set aside for validation: evaluated every eval_every "
        "steps, and the step with the lowest validation loss becomes the run's output. 0: no "
        "validation; the last step is kept and the held-out pairs are evaluated instead.",
    )
    early_stopping_patience: int = param(
        0, "Stop after this many validations without a lower loss (0: never stop early)."
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

    def validate(self) -> None:
        super().validate()  # the next config in the class's bases
        check(
            self.preference_dataset is not None,
            "preference_dataset",
            None,
            "set it to a preference file, folder or glob, e.g. preference_dataset=prefs.jsonl",
        )
        for name in ("batch_size", "micro_batch_tokens", "pad_to_multiple"):
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
