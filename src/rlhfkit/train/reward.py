"""Reward-model training (Bradley-Terry): `rlhfkit train-reward` / `train_reward_model`."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms.reward import bradley_terry_loss, fit_linear_head
from rlhfkit.models.loading import trainable_parameters
from rlhfkit.models.reward import (
    RewardModel,
    build_reward_model,
    load_reward_model,
)
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import autocast, prepare_decoder_blocks
from rlhfkit.train.optim import prepare_optimization, restore_weights
from rlhfkit.train.pair_data import prepare_pair_data
from rlhfkit.train.pairs import (
    EncodedPair,
    pair_batch,
    pair_outputs,
    pair_statistics,
    score_pairs,
)
from rlhfkit.train.reward_config import RewardConfig, reward_spec
from rlhfkit.train.reward_summary import RewardResult, verdict
from rlhfkit.train.validated import BestStep, PairTrainer

logger = logging.getLogger(__name__)


def training_steps(config: RewardConfig, train_pairs: int) -> int:
    """Optimizer steps of the run: from num_epochs when set, else reward_model_train_steps."""
    if config.num_epochs is None:
        return config.reward_model_train_steps
    # rounded first: 1.1 * 100 / 10 is 11.000000000000002 in floating point, not 12 steps
    return max(1, math.ceil(round(config.num_epochs * train_pairs / config.batch_size, 9)))


def train_reward_model(config: RewardConfig) -> RewardResult:
    """Train a Bradley-Terry reward model; returns where it is and how well it ranks."""
    return RewardTrainer(config).run()


class RewardTrainer(PairTrainer):
    """The reward-model training run: pairs, the model and its fitted head, Bradley-Terry
    steps, validation with early stopping, the kept step written as reward_model/."""

    stage = "train-reward"
    validation_metric = "rank_loss"
    metric_label = "rank loss"

    def __init__(self, config: RewardConfig):
        # step 1. engine, resume point, seed
        state = self._start(config)
        self.best = BestStep.from_state(state)
        # step 2. data: load, hold out, set validation pairs aside, encode
        trains = config.num_epochs is not None or config.reward_model_train_steps > 0
        self.data = prepare_pair_data(config, trains, config.use_margin)
        self._check_resume(state, self.data.sources)
        self.total_steps = training_steps(config, len(self.data.train))
        if config.num_epochs is not None:
            logger.info(
                "num_epochs=%g over %d training pairs at batch_size %d: %d steps "
                "(num_epochs wins over reward_model_train_steps)",
                config.num_epochs,
                len(self.data.train),
                config.batch_size,
                self.total_steps,
            )
        self._build_model(state)

    def _build_model(self, state: dict[str, Any] | None) -> None:
        """Step 3. model (its head fitted first), optimizer, schedule (restored when
        resuming)."""
        from rlhfkit.models.loading import resolve_device, resolve_dtype

        config = self.config
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.model = build_reward_model(
            reward_spec(config), config.dtype, config.device, config.head_init_std, config.seed
        )
        self.device = self.model.device
        if config.head_warm_start and state is None:
            self._warm_start_head()
        self.model.train()
        steps = self.total_steps
        self.compiled = prepare_decoder_blocks(
            self.model, config.compile, device, self.parallel.sharding, steps
        )
        self.train_model, self.params, self.optimizer, self.scheduler = prepare_optimization(
            self.parallel, self.model, config, steps, state
        )

    def _warm_start_head(self) -> None:
        """The head fitted on the features the untrained model gives the training pairs
        (LoRA starts as the identity, so these are the base model's): the Bradley-Terry
        loss of a linear head on fixed features is a logistic regression, solved exactly
        instead of being approached by a few hundred noisy steps. Each rank computes the
        features of a share of the pairs; every rank fits the same head on all of them."""
        pairs = self.data.train
        indices = self.parallel.spread(list(range(len(pairs))))
        started = time.perf_counter()
        features = pair_outputs(
            self.model,
            self.model.features,
            [pairs[i] for i in indices],
            self.data.pad_id,
            self.config.micro_batch_tokens * 2,
            self.autocast,
            self.config.pad_to_multiple,
        )
        share = [(i, (f[0] - f[1]).tolist()) for i, f in zip(indices, features, strict=True)]
        diffs = torch.tensor([row for _, row in sorted(self.parallel.gather(share))])
        margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
        fit = fit_linear_head(diffs, margins)
        head = self.model.head
        with torch.no_grad():
            head.weight.copy_(fit.weight.view_as(head.weight).to(head.weight))
            head.bias.zero_()
        logger.info(
            "head fitted on the features of %d training pairs in %.0f s: cross-validated "
            "accuracy %.3f, rank loss %.4f (L2 weight %g)",
            len(pairs),
            time.perf_counter() - started,
            fit.cv_accuracy,
            fit.cv_rank_loss,
            fit.l2,
        )

    def _describe(self) -> None:
        data = self.data
        logger.info(
            "reward model: %d train pairs, %d validation pairs, %d held-out pairs, %d "
            "trainable parameters",
            len(data.train),
            len(data.validation),
            len(data.eval),
            sum(getattr(p, "ds_numel", p.numel()) for p in self.params.values()),
        )

    def _before_loop(self, metrics) -> None:
        """The fitted head is a candidate too: training must beat it on validation pairs."""
        fresh = self.start_step == 0 and not self.best.found
        if fresh and self.config.head_warm_start and self.data.validation:
            metrics.log(0, self._evaluate_at(0))
            self._save_checkpoint(0)

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{stats['rank_loss']:.3f}", "acc": f"{stats['accuracy']:.2f}"}

    def _finish(self, metrics, done: int, dropped: list[str]) -> RewardResult:
        """Step 5. the kept weights become the reward model; its held-out figures."""
        from rlhfkit.tracking import read_metrics

        data = self.data
        kept = self._kept_step(done)
        out = self._save_reward_model(kept, done)
        held_out = self._held_out(out, kept, done)
        if not any(r["step"] == done and "best_step" in r for r in read_metrics(self.run_dir)):
            metrics.log(done, {**held_out, "best_step": kept})  # once, also when resumed
        return RewardResult(
            run_dir=self.run_dir,
            reward_model_dir=out,
            eval_accuracy=held_out["eval/accuracy"],
            eval_rank_loss=held_out["eval/rank_loss"],
            longer_baseline_accuracy=held_out["eval/longer_baseline_accuracy"],
            train_pairs=len(data.train),
            eval_pairs=len(data.eval),
            eval_accuracy_ci95=[
                held_out["eval/accuracy_ci95_low"],
                held_out["eval/accuracy_ci95_high"],
            ],
            eval_ties=held_out["eval/ties"],
            eval_accuracy_chosen_longer=held_out["eval/accuracy_chosen_longer"],
            eval_accuracy_chosen_shorter=held_out["eval/accuracy_chosen_shorter"],
            validation_pairs=len(data.validation),
            steps=done,
            best_step=kept,
            stopped_early=done < self.total_steps,
            verdict=verdict(held_out),
            dropped_rows=dropped,
        )

    def _save_reward_model(self, kept: int, done: int) -> Path:
        """Write `reward_model/` from the weights of step `kept`: the model's own when it is
        the last step, else the kept checkpoint's."""
        out = self.run_dir / "reward_model"
        weights = self._kept_weights(kept, done)
        if self.parallel.is_main:
            self.model.save(out, weights)
            logger.info("reward model from step %d written to %s", kept, out)
        self.parallel.barrier()
        return out

    def _held_out(self, out: Path, kept: int, done: int) -> dict[str, float]:
        """Held-out statistics of the kept weights (loaded back where they are sharded)."""
        if kept != done:
            if self.parallel.sharding == "none":
                state = ckpt.load_checkpoint(ckpt.checkpoint_dir(self.run_dir, kept))
                restore_weights(state, trainable_parameters(self.model))
            else:
                kept_model = load_reward_model(out, self.config.dtype, self.config.device)
                return self.evaluate(self.data.eval, "eval", kept_model, sharded=False)
        return self.evaluate(self.data.eval, "eval")

    def evaluate(
        self,
        pairs: list[EncodedPair],
        prefix: str,
        model: RewardModel | None = None,
        sharded: bool = True,
    ) -> dict[str, float]:
        """Statistics over every pair of `pairs` (each rank scores a share)."""
        indices = self.parallel.spread(list(range(len(pairs))))
        share: list = []
        if indices:
            model = model or self.model
            with self.parallel.full_weights(model) if sharded else nullcontext():
                rewards = score_pairs(
                    model,
                    [pairs[i] for i in indices],
                    self.data.pad_id,
                    self.config.micro_batch_tokens * 2,
                    self.autocast,
                    self.config.pad_to_multiple,
                )
            share = [(i, *row) for i, row in zip(indices, rewards.tolist(), strict=True)]
        rows = sorted(self.parallel.gather(share))
        rewards = torch.tensor([row[1:] for row in rows], dtype=torch.float32).view(-1, 2)
        return pair_statistics(rewards, pairs, prefix)

    def _micro_batch_loss(
        self, pairs: list[EncodedPair]
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The Bradley-Terry loss of a micro-batch of pairs."""
        config, device = self.config, self.device
        batch, margin = pair_batch(pairs, self.data.pad_id, config.pad_to_multiple)
        with autocast(device, self.autocast):
            rewards = self.train_model(batch.to(device))
        stats = bradley_terry_loss(
            rewards[0::2], rewards[1::2], margin.to(device), config.center_rewards_coeff
        )
        figures = {key: getattr(stats, key).item() for key in ("rank_loss", "accuracy", "margin")}
        return stats.loss, figures, batch.tokens
