"""`rlhfkit train-rl`: tune the policy with PPO against a reward model, with a KL penalty.

Each step: sample answers for a batch of prompts (rollout), score them (reward model),
compute log-probabilities, values and the reference's log-probabilities (no gradients),
turn score and KL into per-token rewards, estimate advantages with GAE, then run several
epochs of clipped PPO updates over mini-batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.algorithms.ppo import (
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    policy_loss,
    token_rewards,
    value_loss,
)
from rlhfkit.config import check, param, to_dict
from rlhfkit.models.policy import PolicyOutputs, Rollout
from rlhfkit.rollout.experience import Experience
from rlhfkit.train.common import autocast
from rlhfkit.train.parallel import whiten
from rlhfkit.train.rl import RLTrainer, preview_text
from rlhfkit.train.rl_config import RLCommonConfig

RL_BASE_LEARNING_RATE = 1e-4
"""Learning rate at reinforcement_learning_rate_multiplier=1.0 (LoRA adapter and value head)."""


@dataclass
class RLConfig(RLCommonConfig):
    """Parameters of `rlhfkit train-rl method=ppo` (names shared with the pipeline)."""

    eval_dataset: str | None = param(
        None,
        "Held-out prompts scored every eval_every steps (default: eval_fraction of "
        "prompt_dataset).",
    )
    reinforcement_learning_train_steps: int = param(
        1000, "PPO steps (each: one batch of rollouts, then ppo_epochs of updates)."
    )
    reinforcement_learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {RL_BASE_LEARNING_RATE:g}."
    )
    kl_coeff: float = param(
        0.1, "Weight of the per-token KL penalty to the base model (0: no reference pass)."
    )
    batch_size: int = param(8, "Prompts (and sampled answers) per PPO step.")
    ppo_epochs: int = param(2, "Passes over each batch of rollouts.")
    ppo_mini_batch_size: int | None = param(
        None,
        "Rollouts per optimizer step inside a PPO epoch (default: the largest divisor of "
        "batch_size up to 8).",
    )
    gamma: float = param(1.0, "Discount factor of GAE.")
    lam: float = param(0.95, "Lambda of GAE.")
    cliprange_value: float = param(0.2, "Clip range of the value update.")
    vf_coef: float = param(0.1, "Weight of the value loss.")
    whiten_advantages: bool = param(True, "Normalise advantages to mean 0, std 1 per batch.")
    eval_every: int = param(50, "Score greedy answers on held-out prompts every N steps.")

    def validate(self) -> None:
        super().validate()
        check(self.method == "ppo", "method", self.method, "ppo here (grpo and rloo: GRPOConfig)")
        positive = (
            "reinforcement_learning_train_steps",
            "batch_size",
            "ppo_epochs",
            "ppo_mini_batch_size",
            "eval_every",
        )
        for name in positive:
            value = getattr(self, name)
            check(value is None or value >= 1, name, value, "must be at least 1")
        check(
            self.batch_size < 1 or self.batch_size % self.mini_batch_size == 0,
            "ppo_mini_batch_size",
            self.ppo_mini_batch_size,
            f"must divide batch_size={self.batch_size}",
        )
        check(
            self.reinforcement_learning_rate_multiplier > 0,
            "reinforcement_learning_rate_multiplier",
            self.reinforcement_learning_rate_multiplier,
            "must be positive",
        )
        check(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        check(0 <= self.lam <= 1, "lam", self.lam, "must be in [0, 1]")
        check(self.cliprange_value > 0, "cliprange_value", self.cliprange_value, "must be positive")

    @property
    def mini_batch_size(self) -> int:
        """ppo_mini_batch_size, or when unset the largest divisor of batch_size up to 8."""
        if self.ppo_mini_batch_size is not None:
            return self.ppo_mini_batch_size
        return max(d for d in range(1, 9) if self.batch_size % d == 0)

    @property
    def held_out_dataset(self) -> str | None:
        return self.eval_dataset

    @property
    def learning_rate(self) -> float:
        return RL_BASE_LEARNING_RATE * self.reinforcement_learning_rate_multiplier

    @property
    def eval_interval_steps(self) -> int:
        return self.eval_every

    def total_steps(self, train_prompts: int) -> int:
        return self.reinforcement_learning_train_steps

    def resume_values(self) -> dict[str, Any]:
        """PPO's mini-batch as used: a default that follows batch_size is compared by value."""
        return {**to_dict(self), "ppo_mini_batch_size": self.mini_batch_size}


class PPOTrainer(RLTrainer):
    """PPO: one answer per prompt, a critic on the policy's trunk, GAE, clipped losses."""

    with_value_head = True

    def _rl_step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        config = self.config
        records = [self.data.train[i] for i in indices]
        timing: dict[str, float] = {}
        started = mark = time.perf_counter()
        # a. rollout: sample answers with the current policy
        rollout = self._sample([self.data.train_ids[i] for i in indices])
        answers = self._decode(rollout)
        timing["timing/rollout"], mark = time.perf_counter() - mark, time.perf_counter()
        # b. score: reward model (or grader) on (prompt, answer)
        scores = self._score(records, answers, rollout).rewards
        timing["timing/score"], mark = time.perf_counter() - mark, time.perf_counter()
        # c. old log-probabilities, values, KL to the reference; advantages and returns
        experience, first, kl = self._experience(rollout, scores)
        timing["timing/forward"], mark = time.perf_counter() - mark, time.perf_counter()
        # d. PPO epochs over mini-batches
        update = self._update(
            step, rollout, experience, config.ppo_epochs, config.mini_batch_size, first=first
        )
        timing["timing/update"] = time.perf_counter() - mark
        timing["timing/step"] = elapsed = time.perf_counter() - started
        stats = self._stats(scores, kl, rollout, experience, update)
        stats.update(timing)
        stats["tokens_per_second"] = rollout.response_mask.sum().item() / elapsed
        return stats, self._samples(records, answers, scores)

    def _experience(
        self, rollout: Rollout, scores: torch.Tensor
    ) -> tuple[Experience, PolicyOutputs | None, dict[str, torch.Tensor]]:
        """The step's experience, the first update's forward when it is fused with the old
        log-probabilities' pass (else None), and the per-token KL (`estimate`: the
        configured estimator, `k1`: the true KL's). (B, A) each."""
        config = self.config
        mask = rollout.response_mask.float()
        reference = self._reference_pass(rollout) if config.kl_coeff > 0 else None
        first = None
        if self._fuses_first_pass:
            # the first update's forward, before any optimizer step, is the rollout policy:
            # its detached outputs are the old log-probabilities and values
            with autocast(self.policy.device, self.autocast):
                first = self.train_policy(rollout, config.temperature, with_entropy=True)
            old = PolicyOutputs(*(t.detach().float().cpu() for t in first))
        else:
            old = self._no_grad_pass(rollout)
        ref_logprobs = old.logprobs if reference is None else reference
        kl = {
            "estimate": kl_estimate(old.logprobs, ref_logprobs, config.kl_estimator) * mask,
            "k1": kl_estimate(old.logprobs, ref_logprobs, "k1") * mask,
        }
        # per-token rewards, advantages and returns
        rewards = token_rewards(scores, kl["estimate"], mask, config.kl_coeff)
        advantages, returns = gae(rewards, old.values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(self.parallel, advantages, mask)  # over every rank's answers
        experience = Experience(
            mask, advantages, old.logprobs, old.entropy, old_values=old.values, returns=returns
        )
        return experience, first, kl

    def _stats(self, scores, kl, rollout, experience: Experience, update) -> dict[str, float]:
        config, mask = self.config, experience.mask
        kl_sum = kl["estimate"].sum(1)
        lengths = rollout.response_mask.sum(1).float()
        return {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl_loss": config.kl_coeff * kl_sum.mean().item(),
            "rl_loss": update["loss"],
            "objective/kl": kl["k1"].sum(1).mean().item(),
            "objective/entropy": masked_mean(experience.entropy.cpu(), mask).item(),
            "objective/rlhf_reward": (scores - config.kl_coeff * kl_sum).mean().item(),
            "policy/approx_kl": update["approx_kl"],
            "policy/clipfrac": update["clipfrac"],
            "policy/ratio": update["ratio"],
            "policy/loss": update["policy_loss"],
            "value/loss": update["value_loss"],
            "value/clipfrac": update["value_clipfrac"],
            "value/explained_variance": explained_variance(
                experience.old_values, experience.returns, mask
            ),
            "grad_norm": update["grad_norm"],
            "rollout/response_length": lengths.mean().item(),
            "rollout/ended_fraction": rollout.ended.float().mean().item(),
        }

    def _samples(self, records: list, answers: list[str], scores: torch.Tensor) -> list[dict]:
        return [
            {"prompt": preview_text(r), "answer": a, "score": float(s)}
            for r, a, s in zip(records[:3], answers[:3], scores[:3].tolist(), strict=True)
        ]

    @property
    def _fuses_first_pass(self) -> bool:
        """Whether the first PPO epoch is one forward over the whole batch (one mini-batch,
        one micro-batch), so that forward also gives the old log-probabilities and values."""
        config = self.config
        local_batch = config.batch_size // self.parallel.world_size
        return config.micro_batch_size >= local_batch and config.batch_size <= (
            config.mini_batch_size
        )

    def global_batch_sizes(self) -> dict[str, int]:
        config = self.config
        return {"batch_size": config.batch_size, "ppo_mini_batch_size": config.mini_batch_size}

    def _loss(self, outputs: PolicyOutputs, experience: Experience):
        config, e = self.config, experience
        pl = policy_loss(outputs.logprobs, e.old_logprobs, e.advantages, e.mask, config.cliprange)
        vl = value_loss(outputs.values, e.old_values, e.returns, e.mask, config.cliprange_value)
        parts = {
            "policy_loss": pl.loss,
            "value_loss": vl.loss,
            "clipfrac": pl.clipfrac,
            "approx_kl": pl.approx_kl,
            "ratio": pl.ratio,
            "value_clipfrac": vl.clipfrac,
        }
        return pl.loss + config.vf_coef * vl.loss, parts
