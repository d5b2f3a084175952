"""The parameter blocks every training command shares, each field documented once.

`RunParams`: where and how a run runs (weights' dtype, device, sharding, seed, run folder,
resume). `OptimizationParams`: the optimiser's schedule and the log and checkpoint
cadence. `RewardConfig` and the RL configs take both; a config that wants another default
redeclares the field with `rlhfkit.config.param_default`, keeping its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import check, param
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
