"""`Trainer`: the skeleton every training run shares, filled in by each trainer.

A run, in order (the numbers are those of the comments in every trainer):

    1. start: the parallel engine, the resume point (a checkpoint's state or none), the
       seed (`_start`)
    2. data: loaded, held out and encoded by the trainer, checked against a resumed
       checkpoint's data and settings (`_check_resume`)
    3. model and optimizer: built by the trainer, then `prepare_optimization`
    4. the loop (`_loop`): per step the prompts or pairs of that step, the trainer's `_step`,
       the schedule; at their cadence the log line (means over the steps since the last),
       the evaluation, checkpoints; an early stop when the trainer asks for one
    5. outputs: written by the trainer's `_finish`; `run` writes the config, the rows
       `bad_rows=skip` dropped, summary.json, and waits for every rank

A trainer fills in `_step`, `_evaluate_at`, `_finish` and, where it needs them, the
hooks below (`_before_loop`, `_after_step`, `_stop_after`, `_checkpoint_due`, ...).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from rlhfkit import seeding
from rlhfkit.config import to_dict
from rlhfkit.data.formats import DROPPED_ROWS_FILE, record_dropped
from rlhfkit.fileio import atomic_write_json, write_config
from rlhfkit.progress import progress_bar
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import is_due, sample_indices, window_mean
from rlhfkit.train.parallel import Parallel
from rlhfkit.train.resume import check_resume, data_digest, resume_point

logger = logging.getLogger(__name__)


class Trainer(ABC):
    """One training run: resume, seeding, the step loop with its cadences, checkpoints,
    summary. Subclasses set `self.data` (with `train` and `sources`), `self.total_steps`,
    `self.params`, `self.scheduler`, and fill in the abstract methods."""

    stage = "train"
    """The progress bar's name."""

    # ------------------------------------------------------------------ 1-2. start, data
    def _start(self, config: Any) -> dict[str, Any] | None:
        """Step 1: the parallel engine, the resume point and the seed; returns the resumed
        checkpoint's state (None for a fresh run)."""
        self.config = config
        self.run_dir = Path(config.output_dir)
        self.parallel = Parallel(config.device, config.sharding)
        self.parallel.check_divides(**self.global_batch_sizes())
        self.start_step, state = resume_point(config.resume, self.run_dir)
        # training statistics of the steps since the last log line (kept in checkpoints, so
        # that a resumed run's first log line averages the same steps as an unbroken run's)
        self.window: list[dict[str, float]] = state["extra"].get("window", []) if state else []
        seeding.seed_global(config.seed)
        return state

    def _check_resume(self, state: dict[str, Any] | None, sources: dict[str, Any]) -> None:
        """Step 2: a resumed checkpoint must come from the same data and settings."""
        self.data_digest = data_digest(sources)
        settings = self.config.resume_values()
        check_resume(state, settings, self.data_digest, self.run_dir, self.parallel.is_main)

    def global_batch_sizes(self) -> dict[str, int]:
        """The batch sizes that every rank takes an equal share of."""
        return {"batch_size": self.config.batch_size}

    # ------------------------------------------------------------------ the run
    def run(self) -> Any:
        """The whole run; returns the trainer's result (also written as summary.json)."""
        from rlhfkit.tracking import MetricsLogger

        main = self.parallel.is_main
        dropped: list[str] = []
        if main:
            write_config(self.run_dir, to_dict(self.config))
            dropped = record_dropped(self.data.sources, self.run_dir / DROPPED_ROWS_FILE)
            for line in dropped:
                logger.warning(line)
        self._describe()
        metrics = MetricsLogger(self.run_dir, resume_step=self.start_step, enabled=main)
        try:
            done = self._loop(metrics)
            result = self._finish(metrics, done, dropped)
        finally:
            metrics.close()
            self._close()
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        if main:
            atomic_write_json(self.run_dir / "summary.json", summary)
        self.parallel.barrier()
        return result

    def _loop(self, metrics) -> int:
        """Step 4: train from the start (or resumed) step; returns the last step done."""
        config, total = self.config, self.total_steps
        bar = progress_bar(total, self.start_step, self.stage, enabled=self.parallel.is_main)
        self.bar = bar
        self._before_loop(metrics)
        done = self.start_step
        for step in range(self.start_step, total if not self._stop_after(done) else done):
            indices = sample_indices(step, config.batch_size, len(self.data.train), config.seed)
            lr = self.scheduler.get_last_lr()[0]
            stats = self._step(step, self.parallel.shard(indices))
            self.scheduler.step()
            self.window.append(stats)
            done = step + 1
            bar.update(1)
            bar.set_postfix(self._postfix(stats))
            row: dict[str, Any] = {}
            evaluated = is_due(done, config.eval_interval_steps, total)
            if evaluated:
                row.update(self._evaluate_at(done))
            stopping = done < total and self._stop_after(done)
            if is_due(done, config.log_every, total) or stopping:
                row.update(window_mean(self.window))
                row["learning_rate"] = lr
            self._after_step(metrics, done)
            if row:
                metrics.log(done, row)
            if (
                is_due(done, config.save_every, total)
                or stopping
                or self._checkpoint_due(done, evaluated)
            ):
                self._save_checkpoint(done)
            if stopping:
                bar.write(self._stop_message(done))
                break
        bar.close()
        return done

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, done: int) -> None:
        """Every rank gathers its part of the state; rank 0 writes it."""
        trainable = self.parallel.trainable_state(self.params)
        optimizer = self.parallel.optimizer_state(self.params)
        if not self.parallel.is_main:
            return
        ckpt.save_checkpoint(
            self.config.output_dir,
            done,
            trainable,
            optimizer,
            self.scheduler,
            extra={
                "config": self.config.resume_values(),
                "data": self.data_digest,
                "window": self.window,
                **self._checkpoint_extra(),
            },
            keep=self._keep_newest,
            score=self._checkpoint_score(done),
            keep_best=self._keep_best,
        )

    # ------------------------------------------------------------------ what a trainer fills in
    @abstractmethod
    def _step(self, step: int, indices: list[int]) -> dict[str, float]:
        """One optimizer step on this rank's share `indices` of the step's examples; its
        statistics, the same on every rank."""

    @abstractmethod
    def _evaluate_at(self, done: int) -> dict[str, float]:
        """The evaluation due after step `done`: its metrics (also said on the bar)."""

    @abstractmethod
    def _finish(self, metrics, done: int, dropped: list[str]) -> Any:
        """Step 5: write the outputs after `done` steps; the run's result."""

    def _describe(self) -> None:  # noqa: B027 (optional hook)
        """Log what the run is about to do."""

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        """The figures the progress bar shows after a step."""
        return {}

    def _before_loop(self, metrics) -> None:  # noqa: B027 (optional hook)
        """Work before the first step (an evaluation at step 0, ...); `self.bar` is up."""

    def _after_step(self, metrics, done: int) -> None:  # noqa: B027 (optional hook)
        """Work after each step, before its metrics row is written."""

    def _stop_after(self, done: int) -> bool:
        """Whether to stop early after step `done` (never, by default)."""
        return False

    def _stop_message(self, done: int) -> str:
        return f"step {done}: stopping early"

    def _checkpoint_due(self, done: int, evaluated: bool) -> bool:
        """A checkpoint besides the save_every cadence (a new best, ...)."""
        return False

    def _checkpoint_score(self, done: int) -> float | None:
        """The score a checkpoint of step `done` is ranked by among the best (higher is
        better; None: not ranked)."""
        return None

    def _checkpoint_extra(self) -> dict[str, Any]:
        """What a checkpoint keeps besides settings, data digest and the log window."""
        return {}

    @property
    def _keep_newest(self) -> int:
        """The newest checkpoints kept."""
        return 2

    @property
    def _keep_best(self) -> int:
        """Checkpoints with the best score kept besides the newest."""
        return 0

    def _close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the run holds (also after an error)."""
