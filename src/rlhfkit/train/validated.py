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
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import split_to_count
from rlhfkit.train.loop import Trainer
from rlhfkit.train.memory import release_free_memory
from rlhfkit.train.pairs import EncodedPair, micro_batches


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
    """What the pair trainers share: the step over micro-batches of pairs, validation with
    the best step kept, early stopping. Subclasses set `self.best`
    (`BestStep.from_state`), `self.data` (`PreparedData`) and `self.device`, and write
    `_micro_batch_loss` and `evaluate`."""

    validation_metric = "loss"
    """The validation statistic (`valid/{name}`) the kept step has the lowest of."""
    metric_label = "loss"
    """How the progress line names it."""

    @abstractmethod
    def _micro_batch_loss(
        self, pairs: list[EncodedPair]
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The loss of a micro-batch of pairs (its mean over them, with its graph), its
        statistics and its real tokens."""

    def _step(self, step: int, indices: list[int]) -> dict[str, float]:
        """One optimizer step over the pairs `indices`: forward and backward over
        micro-batches of pairs of similar length (each weighted by its share of the pairs),
        then the optimizer; the step's statistics (means over its pairs) and throughput."""
        config = self.config
        started = time.perf_counter()
        batch_pairs = [self.data.train[i] for i in indices]
        sums: dict[str, float] = {}
        tokens = 0
        chunks = micro_batches(batch_pairs, config.micro_batch_tokens, config.pad_to_multiple)
        chunks = split_to_count(chunks, self.parallel.micro_batch_count(len(chunks)))
        for index, chunk in enumerate(chunks):
            weight = len(chunk) / len(batch_pairs)
            # gradients are combined over the ranks once, at the last micro-batch
            with self.parallel.micro_batch(self.train_model, last=index == len(chunks) - 1):
                loss, stats, chunk_tokens = self._micro_batch_loss(chunk)
                self.parallel.backward(loss * weight)
            tokens += chunk_tokens
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value * weight
            if self.device.type == "cpu":
                release_free_memory()  # before the next micro-batch, of another shape
        grad_norm = self.parallel.step(self.params)
        elapsed = time.perf_counter() - started
        return self.parallel.reduce(
            {
                **sums,
                "grad_norm": grad_norm,
                "timing/step": elapsed,
                "pairs_per_second": len(batch_pairs) / elapsed,
                "tokens_per_second": tokens / elapsed,
            }
        )

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
