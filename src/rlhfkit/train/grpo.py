"""`rlhfkit train-rl method=grpo|rloo`: sample, grade, update.

Each step: sample `compute_multiplier` answers for each of `batch_size` prompts, grade
every answer, turn each group's grades into advantages (the group's mean, or the other
answers' mean for RLOO, as the baseline), then take clipped policy-gradient steps. There
is no critic; a KL penalty to the base model is optional (`kl_coeff`, 0 by default).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.algorithms.grpo import group_advantages, zero_std_fraction
from rlhfkit.algorithms.ppo import (
    LOSS_AGGREGATIONS,
    aggregate,
    kl_estimate,
    masked_mean,
    policy_loss,
)
from rlhfkit.config import check, param
from rlhfkit.models.policy import PolicyOutputs
from rlhfkit.rollout.experience import Experience
from rlhfkit.train.rl import RLTrainer, preview_text
from rlhfkit.train.rl_config import RLCommonConfig

GRPO_BASE_LEARNING_RATE = 1e-4
"""Learning rate at learning_rate_multiplier=1.0 (the policy's LoRA adapter)."""


@dataclass
class GRPOConfig(RLCommonConfig):
    """Parameters of `rlhfkit train-rl method=grpo|rloo` (names as in OpenAI's
    reinforcement fine-tuning where it has them)."""

    method: str = param(
        "grpo",
        "grpo (baseline: the group's mean) or rloo (baseline: the mean of the other answers).",
        choices=("grpo", "rloo"),
    )
    valid_dataset: str | None = param(
        None,
        "Validation prompts scored every eval_interval steps (default: eval_fraction of "
        "prompt_dataset).",
    )
    n_epochs: int = param(1, "Passes over the training prompts.")
    train_steps: int = param(
        0, "Steps to run; 0: as many as n_epochs passes over the prompts take."
    )
    batch_size: int = param(4, "Prompts per step (each gets compute_multiplier answers).")
    learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {GRPO_BASE_LEARNING_RATE:g}."
    )
    compute_multiplier: int = param(8, "Answers sampled per prompt (the group size G).")
    eval_interval: int = param(10, "Score the validation prompts every N steps.")
    kl_coeff: float = param(
        0.0, "Weight of a KL penalty to the base model in the loss (0: no reference pass)."
    )
    scale_rewards: bool = param(
        True, "Divide advantages by the group's standard deviation (false: Dr. GRPO)."
    )
    loss_aggregation: str = param(
        "token_mean",
        "token_mean (every token weighs the same) or sequence_mean (every answer does).",
        choices=LOSS_AGGREGATIONS,
    )
    epochs_per_batch: int = param(
        1, "Passes over each step's answers (more than 1 makes the clipping matter)."
    )
    mini_batch_size: int = param(
        0, "Answers per optimizer step within a step (0: all batch_size x compute_multiplier)."
    )
    keep_best: int = param(3, "Checkpoints with the best valid_reward_mean kept.")

    def validate(self) -> None:
        super().validate()
        check(self.method in ("grpo", "rloo"), "method", self.method, "grpo or rloo here")
        check(self.train_steps >= 0, "train_steps", self.train_steps, "must be >= 0")
        for name in ("n_epochs", "batch_size", "eval_interval"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(self.epochs_per_batch >= 1, "epochs_per_batch", self.epochs_per_batch, ">= 1")
        check(
            self.compute_multiplier >= 2,
            "compute_multiplier",
            self.compute_multiplier,
            "must be at least 2: a group needs two answers to compare",
        )
        check(
            self.mini_batch_size >= 0
            and self.mini_batch_size % self.compute_multiplier == 0
            and self.answers_per_step % max(1, self.mini_batch_size) == 0,
            "mini_batch_size",
            self.mini_batch_size,
            "0, or a multiple of compute_multiplier that divides batch_size x "
            f"compute_multiplier = {self.answers_per_step} (whole groups)",
        )
        check(
            self.micro_batch_size % self.compute_multiplier == 0,
            "micro_batch_size",
            self.micro_batch_size,
            f"a multiple of compute_multiplier={self.compute_multiplier}: a forward pass takes "
            "whole groups, computing their shared prompt once",
        )
        check(
            self.learning_rate_multiplier > 0,
            "learning_rate_multiplier",
            self.learning_rate_multiplier,
            "must be positive",
        )

    @property
    def answers_per_step(self) -> int:
        return self.batch_size * self.compute_multiplier

    @property
    def held_out_dataset(self) -> str | None:
        return self.valid_dataset

    @property
    def learning_rate(self) -> float:
        return GRPO_BASE_LEARNING_RATE * self.learning_rate_multiplier

    @property
    def eval_interval_steps(self) -> int:
        return self.eval_interval

    def total_steps(self, train_prompts: int) -> int:
        if self.train_steps:
            return self.train_steps
        return math.ceil(self.n_epochs * train_prompts / self.batch_size)


class GRPOTrainer(RLTrainer):
    """GRPO / RLOO: a group of answers per prompt, group-relative advantages, no critic."""

    eval_metric = "valid_reward_mean"
    eval_prefix = "valid_"
    reward_metric = "train_reward_mean"

    def global_batch_sizes(self) -> dict[str, int]:
        config = self.config
        sizes = {"batch_size": config.batch_size}
        if config.mini_batch_size:
            sizes["mini_batch_size"] = config.mini_batch_size
        return sizes

    def _rl_step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        config = self.config
        group = config.compute_multiplier
        records = [self.data.train[i] for i in indices for _ in range(group)]
        started = time.perf_counter()
        # step 1. sample: compute_multiplier answers per prompt, groups contiguous
        rollout = self._sample([self.data.train_ids[i] for i in indices], per_prompt=group)
        answers = self._decode(rollout)
        sampling_seconds = time.perf_counter() - started
        # step 2. grade every answer
        mark = time.perf_counter()
        scores = self._score(records, answers, rollout)
        grading_seconds = time.perf_counter() - mark
        # step 3. group-relative advantages, the same for every token of an answer
        mark = time.perf_counter()
        rewards = scores.rewards.view(-1, group)  # (B, G)
        advantages = group_advantages(rewards, config.method, config.scale_rewards).flatten()
        mask = rollout.response_mask.float()  # (B*G, A)
        experience = Experience(
            mask,
            advantages[:, None] * mask,
            old_logprobs=torch.zeros_like(mask),
            entropy=torch.zeros_like(mask),
        )
        if config.kl_coeff > 0:
            experience.ref_logprobs = self._reference_pass(rollout)
        # step 4. update; the first epoch is one mini-batch, so its forward passes give the
        # old log-probabilities (no separate pass)
        mini = config.mini_batch_size or config.answers_per_step
        record_old = mini >= config.answers_per_step
        if not record_old:
            old = self._no_grad_pass(rollout)
            experience.old_logprobs, experience.entropy = old.logprobs, old.entropy
        update = self._update(
            step, rollout, experience, config.epochs_per_batch, mini, None, record_old
        )
        training_seconds = time.perf_counter() - mark
        elapsed = time.perf_counter() - started
        stats = self._stats(scores, rewards, rollout, experience, update)
        stats.update(
            {
                "timing/sampling": sampling_seconds,
                "timing/grading": grading_seconds,
                "timing/training": training_seconds,
                "timing/step": elapsed,
                "tokens_per_second": mask.sum().item() / elapsed,
            }
        )
        samples = [
            {"prompt": preview_text(r), "answer": a, "score": float(s)}
            for r, a, s in zip(
                records[::group], answers[::group], rewards[:, 0].tolist(), strict=True
            )
        ][:3]
        return stats, samples

    def _stats(self, scores, rewards, rollout, experience, update) -> dict[str, float]:
        mask = experience.mask
        stats: dict[str, Any] = {
            "train_reward_mean": rewards.mean().item(),
            "train_reward_std": rewards.std().item(),
            "frac_reward_zero_std": zero_std_fraction(rewards),
            "rl_loss": update["loss"],
            "policy/loss": update["policy_loss"],
            "policy/clipfrac": update["clipfrac"],
            "policy/approx_kl": update["approx_kl"],
            "policy/ratio": update["ratio"],
            "objective/entropy": masked_mean(experience.entropy, mask).item(),
            "grad_norm": update["grad_norm"],
            "rollout/response_length": mask.sum(1).mean().item(),
            "rollout/ended_fraction": rollout.ended.float().mean().item(),
        }
        if self.config.kl_coeff > 0:
            stats["objective/kl"] = update["kl"]
        for name, values in scores.sub_rewards.items():
            stats[f"grader/{name}_mean"] = values.nanmean().item()
        if scores.errors is not None:
            stats["grader/error_rate"] = (scores.errors > 0).float().mean().item()
            answers = len(scores.rewards)
            for kind, count in scores.error_kinds.items():
                stats[f"grader/errors/{kind}"] = count / answers
        return stats

    def _loss(self, outputs: PolicyOutputs, experience: Experience):
        config = self.config
        logprobs, mask = outputs.logprobs, experience.mask
        pl = policy_loss(
            logprobs,
            experience.old_logprobs,
            experience.advantages,
            mask,
            config.cliprange,
            config.loss_aggregation,
        )
        loss = pl.loss
        if config.kl_coeff > 0:
            kl = kl_estimate(logprobs, experience.ref_logprobs, config.kl_estimator)
            kl_term = aggregate(kl, mask, config.loss_aggregation)
            loss = loss + config.kl_coeff * kl_term
        else:
            kl_term = torch.zeros(())
        parts = {
            "policy_loss": pl.loss,
            "clipfrac": pl.clipfrac,
            "approx_kl": pl.approx_kl,
            "ratio": pl.ratio,
            "kl": kl_term,
        }
        return loss, parts
