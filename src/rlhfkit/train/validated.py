"""`PairTrainer`: a `Trainer` on preference pairs that keeps its best step by a validation
loss (the reward model's and DPO's runs).

Validation pairs are set aside from the training pairs (`train.pair_data`); every
`eval_every` steps they are evaluated, the step with the lowest validation loss is
checkpointed and kept (the run's output comes from it), and with
`early_stopping_patience` the run stops after that many evaluations without a lower
loss. Without validation pairs the held-out pairs are evaluated instead and the last step
is kept, so the held-out figure never chooses the step it reports.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.loop import Trainer
from rlhfkit.train.pairs import EncodedPair


@dataclass
class BestStep:
    """The validation step with the lowest loss so far, and evaluations since then."""

    step: int = 0
    loss: float = math.inf
    since: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> BestStep:
        """From a checkpoint's state (a fresh one for a fresh run)."""
        best = dict(state["extra"].get("best", {})) if state else {}
        if "rank_loss" in best:  # checkpoints of earlier versions
            best["loss"] = best.pop("rank_loss")
        return cls(**best)

    @property
    def found(self) -> bool:
        """Whether any validation was recorded (step 0 may be a candidate)."""
        return math.isfinite(self.loss)

    def update(self, step: int, loss: float) -> bool:
        """Record a validation; True when it is a new best."""
        if loss < self.loss:
            self.step, self.loss, self.since = step, loss, 0
            return True
        self.since += 1
        return False


class PairTrainer(Trainer):
    """What the pair trainers share: validation with the best step kept, early stopping.
    Subclasses set `self.best` (`BestStep.from_state`) and `self.data` (`PreparedData`)
    and write `evaluate`."""

    validation_metric = "loss"
    """The validation statistic (`valid/{name}`) the kept step has the lowest of."""
    metric_label = "loss"
    """How the progress line names it."""

    @abstractmethod
    def evaluate(self, pairs: list[EncodedPair], prefix: str) -> dict[str, float]:
        """Statistics over every pair of `pairs`, keys named `{prefix}/...` (including
        `accuracy` and `validation_metric`)."""

    def _evaluate_at(self, done: int) -> dict[str, float]:
        """Validation pairs when there are some (tracking the best step), else held-out."""
        validation = bool(self.data.validation)
        pairs, prefix = (self.data.validation, "valid") if validation else (self.data.eval, "eval")
        stats = self.evaluate(pairs, prefix)
        if validation:
            self.best.update(done, stats[f"valid/{self.validation_metric}"])
        self.bar.write(
            f"step {done}: {'validation' if validation else 'held-out'} accuracy "
            f"{stats[f'{prefix}/accuracy']:.3f}, {self.metric_label} "
            f"{stats[f'{prefix}/{self.validation_metric}']:.4f}"
        )
        return stats

    def _kept_step(self, done: int) -> int:
        """The step whose weights the run's output comes from."""
        return self.best.step if self.data.validation and self.best.found else done

    def _kept_weights(self, kept: int, done: int) -> dict[str, Any]:
        """The trainable weights of step `kept`: the model's own when it is the last step,
        else the kept checkpoint's (every rank calls it; rank 0 gets them)."""
        if kept == done:
            return self.parallel.trainable_state(self.params)
        return ckpt.load_checkpoint(ckpt.checkpoint_dir(self.run_dir, kept))["trainable"]

    def _stop_after(self, done: int) -> bool:
        """Early stopping: no lower validation loss in `early_stopping_patience` evaluations."""
        patience = self.config.early_stopping_patience
        return bool(patience) and self.best.since >= patience

    def _stop_message(self, done: int) -> str:
        return (
            f"step {done}: no lower validation {self.metric_label} in "
            f"{self.config.early_stopping_patience} evaluations; stopping early "
            f"(best step {self.best.step})"
        )

    def _checkpoint_due(self, done: int, evaluated: bool) -> bool:
        return self.best.step == done  # a new best validation step

    def _checkpoint_score(self, done: int) -> float | None:
        return -self.best.loss if self.best.step == done else None

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"best": vars(self.best)}

    @property
    def _keep_best(self) -> int:
        return 1
