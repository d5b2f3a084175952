"""`rlhfkit train-rl`: tune the policy with PPO against a reward model, with a KL penalty.

Each step: sample answers for a batch of prompts (rollout), score them (reward model),
compute log-probabilities, values and the reference's log-probabilities (no gradients),
turn score and KL into per-token rewards, estimate advantages with GAE, then run several
epochs of clipped PPO updates over mini-batches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms.ppo import (
    KL_ESTIMATORS,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from rlhfkit.config import check, param, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.fileio import atomic_write_json
from rlhfkit.models.policy import PolicyModel, Rollout, build_policy, export_merged
from rlhfkit.models.reward import ALL_LINEAR, read_reward_spec
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import (
    autocast,
    clip_gradients,
    is_due,
    lr_factor,
    progress_bar,
    restore_trainable,
    resume_point,
    sample_indices,
    split_held_out,
    window_mean,
    write_config,
)

logger = logging.getLogger(__name__)

RL_BASE_LEARNING_RATE = 1e-4
"""Learning rate at reinforcement_learning_rate_multiplier=1.0 (LoRA adapter and value head)."""

METHODS = ("ppo",)


@dataclass
class RLConfig(DataConfig):
    """Parameters of `rlhfkit train-rl` (names shared with the pipeline)."""

    method: str = param("ppo", "RL algorithm.", choices=METHODS)
    prompt_dataset: str | None = param(
        None, "Prompt dataset (file, folder or glob) in any supported format."
    )
    eval_dataset: str | None = param(
        None,
        "Held-out prompts scored every eval_every steps (default: eval_fraction of "
        "prompt_dataset).",
    )
    eval_fraction: float = param(
        0.1, "Fraction of prompt_dataset held out for evaluation when eval_dataset is unset."
    )
    eval_prompts: int = param(64, "Most held-out prompts answered (greedily) at each evaluation.")
    reward_model: str | None = param(
        None, "Reward-model directory written by train-reward (its reward_model/ folder)."
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
    kl_estimator: str = param(
        "k1",
        "Per-token KL estimator in the reward: k1 (log ratio) or k3 (never negative).",
        choices=("k1", "k3"),
    )
    batch_size: int = param(8, "Prompts (and sampled answers) per PPO step.")
    ppo_epochs: int = param(2, "Passes over each batch of rollouts.")
    ppo_mini_batch_size: int = param(8, "Rollouts per optimizer step inside a PPO epoch.")
    micro_batch_size: int = param(
        8, "Rollouts per forward/backward pass; gradients accumulate up to ppo_mini_batch_size."
    )
    gamma: float = param(1.0, "Discount factor of GAE.")
    lam: float = param(0.95, "Lambda of GAE.")
    cliprange: float = param(0.2, "Clip range of the policy ratio.")
    cliprange_value: float = param(0.2, "Clip range of the value update.")
    vf_coef: float = param(0.1, "Weight of the value loss.")
    whiten_advantages: bool = param(True, "Normalise advantages to mean 0, std 1 per batch.")
    max_grad_norm: float = param(1.0, "Gradient-norm clipping (0 turns it off).")
    temperature: float = param(0.7, "Sampling temperature of the rollouts.")
    top_p: float = param(1.0, "Nucleus sampling: keep the smallest token set with this mass.")
    top_k: int = param(0, "Sample among the k most likely tokens (0: all).")
    missing_eos_penalty: float = param(
        0.0,
        "Subtracted from the score of an answer that never ends within "
        "target_sequence_length (0: off).",
    )
    lora_rank: int = param(8, "LoRA rank of the policy adapter.")
    lora_alpha: float = param(16.0, "LoRA scaling numerator (scale = alpha / rank).")
    lora_targets: list[str] = param(
        list(ALL_LINEAR), "Module names that get LoRA adapters (comma-separated)."
    )
    warmup_steps: int = param(0, "Linear learning-rate warm-up steps.")
    lr_schedule: str = param(
        "constant", "Learning-rate decay after warm-up.", choices=("cosine", "constant", "linear")
    )
    weight_decay: float = param(0.0, "AdamW weight decay.")
    log_every: int = param(1, "Log training metrics every N steps.")
    sample_every: int = param(10, "Log a few decoded prompts, answers and scores every N steps.")
    eval_every: int = param(50, "Score greedy answers on held-out prompts every N steps.")
    save_every: int = param(50, "Write a checkpoint every N steps (and at the end).")
    save_merged: bool = param(True, "Also write the adapter merged into the base (model/).")
    dtype: str = param(
        "auto", "Weights of the frozen base: auto, bf16 or fp32.", ("auto", "bf16", "fp32")
    )
    device: str = param("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    seed: int = param(0, "Seed for initialisation, prompt order, sampling and the held-out split.")
    output_dir: str = param("runs/rl", "Run directory (metrics, checkpoints, policy/, model/).")
    resume: bool = param(False, "Continue from the last checkpoint in output_dir.")

    def validate(self) -> None:
        super().validate()
        check(
            self.prompt_dataset is not None,
            "prompt_dataset",
            None,
            "set it to a prompt file, folder or glob, e.g. prompt_dataset=prompts.jsonl",
        )
        positive = (
            "reinforcement_learning_train_steps",
            "batch_size",
            "ppo_epochs",
            "ppo_mini_batch_size",
            "micro_batch_size",
            "eval_prompts",
            "lora_rank",
            "log_every",
            "sample_every",
            "eval_every",
            "save_every",
        )
        for name in positive:
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(
            self.batch_size % self.ppo_mini_batch_size == 0,
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
        check(self.kl_coeff >= 0, "kl_coeff", self.kl_coeff, "must be >= 0")
        check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, "k1 or k3")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        check(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        check(0 <= self.lam <= 1, "lam", self.lam, "must be in [0, 1]")
        check(self.cliprange > 0, "cliprange", self.cliprange, "must be positive")
        check(self.cliprange_value > 0, "cliprange_value", self.cliprange_value, "must be positive")
        check(
            0.0 < self.eval_fraction < 1.0,
            "eval_fraction",
            self.eval_fraction,
            "must be between 0 and 1 (exclusive)",
        )
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")

    @property
    def learning_rate(self) -> float:
        return RL_BASE_LEARNING_RATE * self.reinforcement_learning_rate_multiplier


@dataclass
class RLResult:
    run_dir: Path
    policy_dir: Path
    model_dir: Path | None
    eval_reward_before: float
    eval_reward_after: float
    eval_prompts: int
    steps: int


@dataclass
class PromptData:
    """Training and held-out prompt records, with their token ids."""

    train: list
    train_ids: list[list[int]]
    eval: list
    eval_ids: list[list[int]]


RewardFn = Callable[[list, list[str], list[bool]], torch.Tensor]
"""(prompt records, decoded answers, whether each answer ended) -> one score each (B,)."""


def train_rl(config: RLConfig, reward_fn: RewardFn | None = None) -> RLResult:
    """Tune a policy with PPO; returns where it is and the held-out scores.

    The reward is `config.reward_model` (a train-reward folder), or `reward_fn` when given
    (any Python scoring function, e.g. a rule with a known optimum).
    """
    return RLTrainer(config, reward_fn).run()


def prepare_prompts(config: RLConfig, tokenizer) -> PromptData:
    """Load the prompts, hold out the evaluation prompts and encode both."""
    from rlhfkit.data.formats import load_prompts

    dataset = load_prompts(config.prompt_dataset)
    for warning in dataset.warnings:
        logger.warning(warning)
    records = dataset.records
    if config.eval_dataset:
        eval_records = load_prompts(config.eval_dataset).records
    else:
        if len(records) < 2:
            raise RlhfkitError(
                f"{config.prompt_dataset} has {len(records)} prompt(s): at least 2 are needed "
                "to hold one out; add rows or set eval_dataset"
            )
        train_idx, eval_idx = split_held_out(len(records), config.eval_fraction, config.seed)
        eval_records = [records[i] for i in eval_idx]
        records = [records[i] for i in train_idx]
    eval_records = eval_records[: config.eval_prompts]
    encoder = PromptEncoder.from_settings(tokenizer, config)
    train_ids = [encoder.encode_prompt(r.messages).ids for r in records]
    logger.info(
        "training prompts: %s",
        encoder.counts.summary(config.prompt_sequence_length, config.target_sequence_length),
    )
    eval_encoder = PromptEncoder.from_settings(tokenizer, config)
    eval_ids = [eval_encoder.encode_prompt(r.messages).ids for r in eval_records]
    return PromptData(records, train_ids, eval_records, eval_ids)


class RewardScorer:
    """Scores answers with a reward model, sharing the policy's base weights when it can."""

    def __init__(self, config: RLConfig, policy: PolicyModel):
        from rlhfkit.eval.score import encoder_for
        from rlhfkit.models.loading import load_tokenizer
        from rlhfkit.models.reward import attach_reward_model, load_reward_model

        spec = read_reward_spec(config.reward_model)
        self.shared = spec.base_model == config.large_model_reference and not spec.full_finetune
        if self.shared:
            self.model = attach_reward_model(config.reward_model, policy.backbone)
        else:
            self.model = load_reward_model(config.reward_model, config.dtype, config.device)
        self.encoder = encoder_for(self.model, load_tokenizer(spec.base_model))
        self.penalty = config.missing_eos_penalty
        self.micro_batch_size = config.micro_batch_size

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> torch.Tensor:
        """One score per answer (the missing-end penalty applied). Shape: (B,)"""
        from rlhfkit.eval.score import score_texts

        scores = score_texts(
            self.model,
            self.encoder,
            [r.messages for r in records],
            [[a] for a in answers],
            batch_size=self.micro_batch_size,
            ended=[[e] for e in ended],
        )
        out = torch.tensor([s[0] for s in scores], dtype=torch.float32)
        if self.penalty:
            out = out - self.penalty * (~torch.tensor(ended)).float()
        return out


class RLTrainer:
    """The PPO run: prompts, policy (with critic and reference), reward, loop, output."""

    def __init__(self, config: RLConfig, reward_fn: RewardFn | None = None):
        from rlhfkit.models.loading import load_tokenizer, resolve_device, resolve_dtype

        self.config = config
        self.run_dir = Path(config.output_dir)
        if reward_fn is None:
            if config.reward_model is None:
                raise ConfigError(
                    "reward_model is not set: set it to the reward_model/ folder written by "
                    "`rlhfkit train-reward`, e.g. reward_model=runs/reward/reward_model"
                )
            read_reward_spec(config.reward_model)  # a bad folder fails before any loading
        self.start_step, state = resume_point(config.resume, self.run_dir)
        torch.manual_seed(config.seed)
        # step 1. prompts: load, hold out, encode
        self.tokenizer = load_tokenizer(config.large_model_reference)
        self.data = prepare_prompts(config, self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        # step 2. policy + critic + reference on one base; the reward model beside them
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.policy = build_policy(
            config.large_model_reference,
            config.lora_rank,
            config.lora_alpha,
            list(config.lora_targets),
            with_value_head=True,
            dtype=config.dtype,
            device=config.device,
            seed=config.seed,
        )
        self.scorer = reward_fn or RewardScorer(config, self.policy)
        self.shared_reward = getattr(self.scorer, "shared", False)
        self.policy.train()
        self.params = {n: p for n, p in self.policy.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_factor(
                config.reinforcement_learning_train_steps, config.warmup_steps, config.lr_schedule
            ),
        )
        self.eval_before: float | None = None
        if state is not None:
            restore_trainable(state, self.params, self.optimizer, self.scheduler)
            self.eval_before = state["extra"].get("eval_reward_before")

    # ------------------------------------------------------------------ the run
    def run(self) -> RLResult:
        from rlhfkit.tracking import MetricsLogger, truncate_metrics

        config = self.config
        write_config(self.run_dir, to_dict(config))
        if self.start_step:
            truncate_metrics(self.run_dir / "samples.jsonl", self.start_step)
        logger.info(
            "RL (%s): %d training prompts, %d held-out prompts, %d trainable parameters, "
            "reward model %s (%s)",
            config.method,
            len(self.data.train),
            len(self.data.eval),
            sum(p.numel() for p in self.params.values()),
            config.reward_model or "a Python function",
            "sharing the policy's base weights" if self.shared_reward else "its own weights",
        )
        metrics = MetricsLogger(self.run_dir, resume_step=self.start_step)
        try:
            if self.eval_before is None:
                before = self.evaluate()
                self.eval_before = before["eval/reward"]
                metrics.log(0, before)
            last = self._loop(metrics)
        finally:
            metrics.close()
        # step 6. outputs: the adapter (+ value head) and the merged model
        policy_dir = self.run_dir / "policy"
        self.policy.save(policy_dir)
        model_dir = None
        if config.save_merged:
            model_dir = export_merged(
                config.large_model_reference, policy_dir, self.run_dir / "model"
            )
        result = RLResult(
            self.run_dir,
            policy_dir,
            model_dir,
            self.eval_before,
            last["eval/reward"],
            len(self.data.eval),
            config.reinforcement_learning_train_steps,
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        atomic_write_json(self.run_dir / "summary.json", summary)
        return result

    def _loop(self, metrics) -> dict[str, float]:
        config, total = self.config, self.config.reinforcement_learning_train_steps
        last_eval: dict[str, float] = {}
        window: list[dict[str, float]] = []
        bar = progress_bar(total, self.start_step, f"train-rl {config.method}")
        for step in range(self.start_step, total):
            indices = sample_indices(step, config.batch_size, len(self.data.train), config.seed)
            lr = self.scheduler.get_last_lr()[0]
            stats, samples = self._step(step, indices)
            self.scheduler.step()
            window.append(stats)
            done = step + 1
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['objective/kl']:.3f}")
            row: dict[str, Any] = {}
            if is_due(done, config.log_every, total):
                row.update(window_mean(window))
                row["learning_rate"] = lr
            if is_due(done, config.sample_every, total):
                self._log_samples(metrics, done, samples)
            if is_due(done, config.eval_every, total):
                last_eval = self.evaluate()
                row.update(last_eval)
                bar.write(
                    f"step {done}: held-out reward {last_eval['eval/reward']:.4f} "
                    f"(before training {self.eval_before:.4f})"
                )
            if row:
                metrics.log(done, row)
            if is_due(done, config.save_every, total):
                ckpt.save_checkpoint(
                    config.output_dir,
                    done,
                    self.params,
                    self.optimizer,
                    self.scheduler,
                    extra={"config": to_dict(config), "eval_reward_before": self.eval_before},
                )
        bar.close()
        return last_eval or self.evaluate()  # resumed after the final step: evaluate once

    # ------------------------------------------------------------------ one PPO step
    def _step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        config, policy = self.config, self.policy
        records = [self.data.train[i] for i in indices]
        started = time.perf_counter()
        # step 3a. rollout: sample answers with the current policy
        with autocast(policy.device, self.autocast):
            rollout = policy.sample(
                [self.data.train_ids[i] for i in indices],
                config.target_sequence_length,
                self.eos_id,
                self.pad_id,
                config.temperature,
                config.top_p,
                config.top_k,
            )
        answers = self._decode(rollout)
        rollout_seconds = time.perf_counter() - started
        # step 3b. score: reward model on (prompt, answer)
        mark = time.perf_counter()
        scores = self.scorer(records, answers, rollout.ended.tolist())
        score_seconds = time.perf_counter() - mark
        # step 3c. log-probabilities, values and the reference (no gradients)
        mark = time.perf_counter()
        mask = rollout.response_mask.float()
        reference = self._reference_pass(rollout) if config.kl_coeff > 0 else None
        first = None
        if self._fuses_first_pass:
            # the first update's forward, before any optimizer step, is the rollout policy:
            # its detached outputs are the old log-probabilities and values
            with autocast(policy.device, self.autocast):
                first = policy(rollout, config.temperature, with_entropy=True)
            old_logprobs, old_values, entropy = (t.detach().float().cpu() for t in first)
        else:
            old_logprobs, old_values, entropy = self._no_grad_pass(rollout)
        ref_logprobs = old_logprobs if reference is None else reference
        kl = kl_estimate(old_logprobs, ref_logprobs, config.kl_estimator) * mask
        true_kl = kl_estimate(old_logprobs, ref_logprobs, "k1") * mask
        # step 4. per-token rewards, advantages and returns
        rewards = token_rewards(scores, kl, mask, config.kl_coeff)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        forward_seconds = time.perf_counter() - mark
        # step 5. PPO epochs over mini-batches
        mark = time.perf_counter()
        update = self._update(
            step, rollout, old_logprobs, old_values, advantages, returns, first=first
        )
        update_seconds = time.perf_counter() - mark
        elapsed = time.perf_counter() - started
        lengths = rollout.response_mask.sum(1).float()
        stats = {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl_loss": config.kl_coeff * kl.sum(1).mean().item(),
            "rl_loss": update["loss"],
            "objective/kl": true_kl.sum(1).mean().item(),
            "objective/entropy": masked_mean(entropy.cpu(), mask).item(),
            "objective/rlhf_reward": (scores - config.kl_coeff * kl.sum(1)).mean().item(),
            "policy/approx_kl": update["approx_kl"],
            "policy/clipfrac": update["clipfrac"],
            "policy/ratio": update["ratio"],
            "policy/loss": update["policy_loss"],
            "value/loss": update["value_loss"],
            "value/clipfrac": update["value_clipfrac"],
            "value/explained_variance": explained_variance(old_values, returns, mask),
            "grad_norm": update["grad_norm"],
            "rollout/response_length": lengths.mean().item(),
            "rollout/ended_fraction": rollout.ended.float().mean().item(),
            "timing/rollout": rollout_seconds,
            "timing/score": score_seconds,
            "timing/forward": forward_seconds,
            "timing/update": update_seconds,
            "timing/step": elapsed,
            "tokens_per_second": lengths.sum().item() / elapsed,
        }
        samples = [
            {"prompt": _last_user_turn(r), "answer": a, "score": float(s)}
            for r, a, s in zip(records[:3], answers[:3], scores[:3].tolist(), strict=True)
        ]
        return stats, samples

    @torch.no_grad()
    def _no_grad_pass(self, rollout: Rollout) -> tuple[torch.Tensor, ...]:
        """Policy log-probabilities, values and entropy of the rollout, in micro-batches, on
        the CPU. Shape: (B, A) each."""
        config, policy = self.config, self.policy
        parts: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, rollout.query_ids.shape[0], config.micro_batch_size):
            part = rollout.rows(slice(start, start + config.micro_batch_size), trim=False)
            with autocast(policy.device, self.autocast):
                outputs = policy(part, config.temperature, with_entropy=True)
            parts.append(tuple(t.float().cpu() for t in outputs))
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))

    @property
    def _fuses_first_pass(self) -> bool:
        """Whether the first PPO epoch is one forward over the whole batch (one mini-batch,
        one micro-batch), so that forward also gives the old log-probabilities and values."""
        config = self.config
        return config.micro_batch_size >= config.batch_size <= config.ppo_mini_batch_size

    @torch.no_grad()
    def _reference_pass(self, rollout: Rollout) -> torch.Tensor:
        """Reference log-probabilities of the rollout, in micro-batches, on the CPU. (B, A)"""
        config, policy = self.config, self.policy
        parts = []
        for start in range(0, rollout.query_ids.shape[0], config.micro_batch_size):
            part = rollout.rows(slice(start, start + config.micro_batch_size), trim=False)
            with autocast(policy.device, self.autocast):
                parts.append(policy.reference_logprobs(part, config.temperature).float().cpu())
        return torch.cat(parts)

    def _update(
        self,
        step: int,
        rollout: Rollout,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        first: tuple[torch.Tensor, ...] | None = None,
    ) -> dict[str, float]:
        """ppo_epochs passes of clipped updates; returns the mean statistics.

        `first`: the policy's (logprobs, values, ...) of the whole batch, with their graph,
        computed before any update; the first epoch uses them instead of a new forward.
        """
        config, policy = self.config, self.policy
        size = rollout.query_ids.shape[0]
        sums: dict[str, float] = {}
        updates = 0
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        for epoch in range(config.ppo_epochs):
            order = torch.randperm(size, generator=generator)
            if epoch == 0 and first is not None:
                order = torch.arange(size)
            for start in range(0, size, config.ppo_mini_batch_size):
                mini = order[start : start + config.ppo_mini_batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                totals = dict.fromkeys(
                    (
                        "loss",
                        "policy_loss",
                        "value_loss",
                        "clipfrac",
                        "approx_kl",
                        "ratio",
                        "value_clipfrac",
                    ),
                    0.0,
                )
                for micro_start in range(0, len(mini), config.micro_batch_size):
                    rows = mini[micro_start : micro_start + config.micro_batch_size]
                    reuse = epoch == 0 and first is not None
                    part = rollout.rows(rows, trim=not reuse)
                    width = part.response_ids.shape[1]
                    mask = part.response_mask.float().to(policy.device)

                    def take(t: torch.Tensor, rows=rows, width=width) -> torch.Tensor:
                        return t[rows][:, :width].to(policy.device)

                    if reuse:
                        logprobs, values = first[0], first[1]
                    else:
                        with autocast(policy.device, self.autocast):
                            logprobs, values, _ = policy(part, config.temperature)
                    pl = policy_loss(
                        logprobs, take(old_logprobs), take(advantages), mask, config.cliprange
                    )
                    vl = value_loss(
                        values, take(old_values), take(returns), mask, config.cliprange_value
                    )
                    loss = pl.loss + config.vf_coef * vl.loss
                    weight = len(rows) / len(mini)
                    (loss * weight).backward()
                    parts = {
                        "loss": loss,
                        "policy_loss": pl.loss,
                        "value_loss": vl.loss,
                        "clipfrac": pl.clipfrac,
                        "approx_kl": pl.approx_kl,
                        "ratio": pl.ratio,
                        "value_clipfrac": vl.clipfrac,
                    }
                    for key, value in parts.items():
                        totals[key] += float(value.detach()) * weight
                grad_norm = clip_gradients(self.params, config.max_grad_norm)
                self.optimizer.step()
                totals["grad_norm"] = grad_norm
                for key, value in totals.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        return {k: v / updates for k, v in sums.items()}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean reward-model score of greedy answers to the held-out prompts."""
        config, policy = self.config, self.policy
        scores, lengths = [], []
        for start in range(0, len(self.data.eval), config.micro_batch_size):
            records = self.data.eval[start : start + config.micro_batch_size]
            prompt_ids = self.data.eval_ids[start : start + config.micro_batch_size]
            with autocast(policy.device, self.autocast):
                rollout = policy.sample(
                    prompt_ids,
                    config.target_sequence_length,
                    self.eos_id,
                    self.pad_id,
                    do_sample=False,
                )
            answers = self._decode(rollout)
            scores.append(self.scorer(records, answers, rollout.ended.tolist()))
            lengths.append(rollout.response_mask.sum(1).float())
        all_scores = torch.cat(scores)
        return {
            "eval/reward": all_scores.mean().item(),
            "eval/reward_std": all_scores.std().item() if len(all_scores) > 1 else 0.0,
            "eval/response_length": torch.cat(lengths).mean().item(),
        }

    def _decode(self, rollout: Rollout) -> list[str]:
        return [
            self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
            for ids, mask in zip(rollout.response_ids, rollout.response_mask, strict=True)
        ]

    def _log_samples(self, metrics, step: int, samples: list[dict]) -> None:
        path = self.run_dir / "samples.jsonl"
        with open(path, "a", encoding="utf-8") as fh:
            for sample in samples:
                fh.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")
        body = "\n\n".join(
            f"**score {s['score']:.3f}**\n\nprompt: {s['prompt']}\n\nanswer: {s['answer']}"
            for s in samples
        )
        metrics.text(step, "samples", body)


def _last_user_turn(record) -> str:
    text = record.messages[-1].content
    return text if len(text) <= 300 else text[:300] + "..."
