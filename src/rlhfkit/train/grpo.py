"""`rlhfkit train-rl method=grpo|rloo`: sample, grade, update.

Each step: sample `compute_multiplier` answers for each of `batch_size` prompts, grade
every answer, turn each group's grades into advantages (the group's mean, or the other
answers' mean for RLOO, as the baseline), then take clipped policy-gradient steps. There
is no critic; a KL penalty to the base model is optional (`kl_coeff`, 0 by default). The
loss variants of the last year (loss types, clip-higher, GSPO's sequence-level ratio, DAPO's
overlong filtering and dynamic sampling) take TRL's parameter names where TRL has them.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, fields
from typing import Any

import torch

from rlhfkit.algorithms.grpo import group_advantages, loss_mask, zero_std_fraction, zero_std_groups
from rlhfkit.algorithms.ppo import (
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_AGGREGATIONS,
    LOSS_TYPE_OF_AGGREGATION,
    LOSS_TYPES,
    clipped_surrogate,
    kl_estimate,
    loss_count,
    masked_mean,
    normalised_loss,
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
        "token_mean (every token of a micro-batch weighs the same: loss_type=bnpo) or "
        "sequence_mean (every answer does: loss_type=grpo); loss_type, when set, decides.",
        choices=LOSS_AGGREGATIONS,
    )
    loss_type: str | None = param(
        None,
        "How per-token losses become the loss (TRL's names): grpo (each answer's token mean, "
        "then the mean over answers), bnpo (the token mean of each micro-batch), dr_grpo "
        "(the token sum / (answers x target_sequence_length), Dr. GRPO), dapo (the token mean "
        "over the whole mini-batch, DAPO; TRL's default). Unset: loss_aggregation decides "
        "(token_mean is bnpo). Masked answers count in no normaliser.",
        choices=(None, *LOSS_TYPES),
    )
    epsilon: float | None = param(
        None,
        "Lower clip range of the ratio, 1 - epsilon (TRL's name; unset: cliprange).",
    )
    epsilon_high: float | None = param(
        None,
        "Upper clip range of the ratio, 1 + epsilon_high (DAPO's clip-higher suggests 0.28; "
        "unset: the lower one).",
    )
    importance_sampling_level: str = param(
        "token",
        "token (a ratio per token) or sequence (GSPO: one ratio per answer, exp of the mean "
        "log ratio over its tokens, on all of them; GSPO clips it at about 3e-4 / 4e-4).",
        choices=IMPORTANCE_SAMPLING_LEVELS,
    )
    mask_truncated_completions: bool = param(
        False,
        "Answers cut at target_sequence_length (no end token) get no gradient and count in "
        "no normaliser (DAPO's overlong filtering); logs truncated_fraction.",
    )
    skip_zero_std_groups: bool = param(
        False,
        "Leave out of the update the groups whose answers all got the same grade "
        "(frac_reward_zero_std): DAPO's dynamic sampling without its re-sampling, so a step "
        "trains on fewer groups (TRL has no such option). A step with no group left takes no "
        "optimizer step. Logs skipped_groups and update_skipped.",
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
        self._validate_loss()

    def _validate_loss(self) -> None:
        """The loss variants: known names, positive clip ranges, no two names that disagree."""
        check(
            self.loss_type in (None, *LOSS_TYPES),
            "loss_type",
            self.loss_type,
            f"one of {', '.join(LOSS_TYPES)}, or unset (loss_aggregation decides)",
        )
        check(
            self.loss_type is None
            or _is_default(self, "loss_aggregation")
            or LOSS_TYPE_OF_AGGREGATION.get(self.loss_aggregation) == self.loss_type,
            "loss_aggregation",
            self.loss_aggregation,
            f"loss_type={self.loss_type} is set and decides: drop loss_aggregation "
            "(sequence_mean is loss_type=grpo, token_mean is bnpo)",
        )
        for name in ("epsilon", "epsilon_high"):
            value = getattr(self, name)
            check(value is None or value > 0, name, value, "must be positive, or unset")
        check(
            self.epsilon is None
            or _is_default(self, "cliprange")
            or self.cliprange == self.epsilon,
            "cliprange",
            self.cliprange,
            f"epsilon={self.epsilon} is set and is the lower clip range (TRL's name for "
            "cliprange): drop cliprange",
        )
        check(
            self.importance_sampling_level in IMPORTANCE_SAMPLING_LEVELS,
            "importance_sampling_level",
            self.importance_sampling_level,
            " or ".join(IMPORTANCE_SAMPLING_LEVELS),
        )

    @property
    def answers_per_step(self) -> int:
        return self.batch_size * self.compute_multiplier

    @property
    def resolved_loss_type(self) -> str:
        """loss_type, or the one loss_aggregation computes."""
        return self.loss_type or LOSS_TYPE_OF_AGGREGATION[self.loss_aggregation]

    @property
    def clip_low(self) -> float:
        """The lower clip range: epsilon, or cliprange."""
        return self.cliprange if self.epsilon is None else self.epsilon

    @property
    def clip_high(self) -> float:
        """The upper clip range: epsilon_high, or the lower one."""
        return self.clip_low if self.epsilon_high is None else self.epsilon_high

    @property
    def masks_answers(self) -> bool:
        """Whether some answers may be left out of the loss."""
        return self.mask_truncated_completions or self.skip_zero_std_groups

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


def _is_default(config: GRPOConfig, name: str) -> bool:
    return getattr(config, name) == next(f.default for f in fields(config) if f.name == name)


NO_UPDATE = {
    "loss": 0.0,
    "policy_loss": 0.0,
    "clipfrac": 0.0,
    "approx_kl": 0.0,
    "ratio": 1.0,
    "kl": 0.0,
    "grad_norm": 0.0,
}
"""The update statistics of a step that took no optimizer step (no answer to learn from)."""


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
        # step 3. group-relative advantages, the same for every token of an answer; the
        # loss mask leaves out truncated answers and skipped groups where asked
        mark = time.perf_counter()
        rewards = scores.rewards.view(-1, group)  # (B, G)
        experience, masked = self._experience(rollout, rewards)
        # step 4. update
        update = self._train(step, rollout, experience)
        training_seconds = time.perf_counter() - mark
        elapsed = time.perf_counter() - started
        stats = self._stats(scores, rewards, rollout, experience, update)
        stats.update(masked)
        stats.update(
            {
                "timing/sampling": sampling_seconds,
                "timing/grading": grading_seconds,
                "timing/training": training_seconds,
                "timing/step": elapsed,
                "tokens_per_second": rollout.response_mask.float().sum().item() / elapsed,
            }
        )
        samples = [
            {"prompt": preview_text(r), "answer": a, "score": float(s)}
            for r, a, s in zip(
                records[::group], answers[::group], rewards[:, 0].tolist(), strict=True
            )
        ][:3]
        return stats, samples

    def _experience(self, rollout, rewards: torch.Tensor) -> tuple[Experience, dict[str, float]]:
        """The step's training targets, and how many answers and groups the loss mask left
        out (when asked to: mask_truncated_completions, skip_zero_std_groups)."""
        config = self.config
        advantages = group_advantages(rewards, config.method, config.scale_rewards).flatten()
        truncated = ~rollout.ended if config.mask_truncated_completions else None
        skipped = zero_std_groups(rewards) if config.skip_zero_std_groups else None
        response_mask = rollout.response_mask.float()  # (B*G, A)
        mask = loss_mask(response_mask, config.compute_multiplier, truncated, skipped)
        experience = Experience(
            mask,
            advantages[:, None] * mask,
            old_logprobs=torch.zeros_like(mask),
            entropy=torch.zeros_like(mask),
        )
        masked: dict[str, float] = {}
        if truncated is not None:
            masked["truncated_fraction"] = truncated.float().mean().item()
        if skipped is not None:
            # a count: each rank logs its own times the ranks, so their mean is the total
            masked["skipped_groups"] = float(skipped.sum()) * self.parallel.world_size
        return experience, masked

    def _train(self, step: int, rollout, experience: Experience) -> dict[str, float]:
        """The update's statistics; with no answer left in the loss on any rank, no passes
        and no optimizer step (the step still counts, logs and saves)."""
        config = self.config
        stats = {"update_skipped": 0.0} if config.masks_answers else {}
        if config.masks_answers and self._global_count(experience.mask.sum()) == 0:
            # the schedule still counts the step: torch's warning about it is moot here
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
            return {**NO_UPDATE, "update_skipped": 1.0}
        if config.kl_coeff > 0:
            experience.ref_logprobs = self._reference_pass(rollout)
        # the first epoch is one mini-batch, so its forward passes give the old
        # log-probabilities (no separate pass)
        mini = config.mini_batch_size or config.answers_per_step
        record_old = mini >= config.answers_per_step
        if not record_old:
            old = self._no_grad_pass(rollout)
            experience.old_logprobs, experience.entropy = old.logprobs, old.entropy
        update = self._update(
            step, rollout, experience, config.epochs_per_batch, mini, None, record_old
        )
        return {**NO_UPDATE, **update, **stats}

    def _global_count(self, count: torch.Tensor) -> float:
        """A count summed over the ranks."""
        return float(self.parallel.sum(count.detach().double().reshape(1)))

    def _micro_weights(self, experience: Experience, chunks: list[torch.Tensor]) -> list[float]:
        """Each micro-batch's share of what its mini-batch's loss normalises by (over every
        rank): answers, or tokens for dapo (`loss_count`)."""
        config = self.config
        loss_type = config.resolved_loss_type
        if not config.masks_answers and loss_type != "dapo":
            return super()._micro_weights(experience, chunks)
        counts = [loss_count(experience.mask[rows], loss_type) for rows in chunks]
        # every rank holds an equal share of the mini-batch; its gradients are averaged
        total = self._global_count(torch.tensor(sum(counts), dtype=torch.float64))
        total = total / self.parallel.world_size
        return [count / total if total else 0.0 for count in counts]

    def _stats(self, scores, rewards, rollout, experience, update) -> dict[str, float]:
        response_mask = rollout.response_mask.float()
        stats: dict[str, Any] = {
            "train_reward_mean": rewards.mean().item(),
            "train_reward_std": rewards.std().item(),
            "frac_reward_zero_std": zero_std_fraction(rewards),
            "rl_loss": update["loss"],
            "policy/loss": update["policy_loss"],
            "policy/clipfrac": update["clipfrac"],
            "policy/approx_kl": update["approx_kl"],
            "policy/ratio": update["ratio"],
            "objective/entropy": masked_mean(experience.entropy, response_mask).item(),
            "grad_norm": update["grad_norm"],
            "rollout/response_length": response_mask.sum(1).mean().item(),
            "rollout/ended_fraction": rollout.ended.float().mean().item(),
        }
        if "update_skipped" in update:
            stats["update_skipped"] = update["update_skipped"]
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
        loss_type, max_length = config.resolved_loss_type, config.target_sequence_length
        terms = clipped_surrogate(
            logprobs,
            experience.old_logprobs,
            experience.advantages,
            mask,
            config.clip_low,
            config.clip_high,
            config.importance_sampling_level,
        )
        policy = normalised_loss(terms.losses, mask, loss_type, max_length)
        loss = policy
        if config.kl_coeff > 0:
            kl = kl_estimate(logprobs, experience.ref_logprobs, config.kl_estimator)
            kl_term = normalised_loss(kl, mask, loss_type, max_length)
            loss = loss + config.kl_coeff * kl_term
        else:
            kl_term = torch.zeros(())
        parts = {
            "policy_loss": policy,
            "clipfrac": terms.clipfrac,
            "approx_kl": terms.approx_kl,
            "ratio": terms.ratio,
            "kl": kl_term,
        }
        return loss, parts
