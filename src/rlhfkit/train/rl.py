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
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms.ppo import (
    KL_ESTIMATORS,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    policy_loss,
    token_rewards,
    value_loss,
)
from rlhfkit.config import check, param, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.data.formats import DROPPED_ROWS_FILE, record_dropped
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import grader_item
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.fileio import atomic_write_json
from rlhfkit.graders.sandbox import resolve_mode, sandbox_param
from rlhfkit.models.policy import PolicyModel, Rollout, build_policy, export_merged
from rlhfkit.models.reward import ALL_LINEAR, read_reward_spec
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import (
    autocast,
    check_resume,
    data_digest,
    is_due,
    prepare_optimization,
    progress_bar,
    resume_point,
    sample_indices,
    split_held_out,
    window_mean,
    write_config,
)
from rlhfkit.train.parallel import Parallel, whiten
from rlhfkit.train.sharding import sharding_param

logger = logging.getLogger(__name__)

RL_BASE_LEARNING_RATE = 1e-4
"""Learning rate at reinforcement_learning_rate_multiplier=1.0 (LoRA adapter and value head)."""

METHODS = ("ppo", "grpo", "rloo")


@dataclass
class RLCommonConfig(DataConfig, ABC):
    """Parameters every `rlhfkit train-rl` method shares."""

    method: str = param(
        "ppo",
        "RL algorithm: ppo (one answer per prompt, a critic, GAE) or grpo / rloo (several "
        "answers per prompt, group-relative advantages, no critic).",
        choices=METHODS,
    )
    prompt_dataset: str | None = param(
        None, "Prompt dataset (file, folder or glob) in any supported format."
    )
    eval_fraction: float = param(
        0.1, "Fraction of prompt_dataset held out for evaluation when no held-out file is set."
    )
    eval_prompts: int = param(64, "Most held-out prompts answered at each evaluation.")
    reward_model: str | None = param(
        None, "Reward-model directory written by train-reward (its reward_model/ folder)."
    )
    kl_coeff: float = param(0.0, "Weight of the KL penalty to the base model (0: none).")
    batch_size: int = param(8, "Prompts per step.")
    grader: str | None = param(
        None, "Grader file (YAML or JSON, see Graders): the reward, instead of reward_model."
    )
    grader_sandbox: str | None = sandbox_param()
    kl_estimator: str = param(
        "k1",
        "Per-token KL estimator: k1 (log ratio) or k3 (never negative).",
        choices=("k1", "k3"),
    )
    micro_batch_size: int = param(
        8, "Answers per forward/backward pass; gradients accumulate over a mini-batch."
    )
    cliprange: float = param(0.2, "Clip range of the policy ratio.")
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
    warmup_steps: int = param(
        0, "Linear learning-rate warm-up steps (a tenth of the run when not shorter than it)."
    )
    lr_schedule: str = param(
        "constant", "Learning-rate decay after warm-up.", choices=("cosine", "constant", "linear")
    )
    weight_decay: float = param(0.0, "AdamW weight decay.")
    log_every: int = param(1, "Log training metrics every N steps.")
    sample_every: int = param(10, "Log a few decoded prompts, answers and scores every N steps.")
    save_every: int = param(50, "Write a checkpoint every N steps (and at the end).")
    save_merged: bool = param(True, "Also write the adapter merged into the base (model/).")
    dtype: str = param(
        "auto", "Weights of the frozen base: auto, bf16 or fp32.", ("auto", "bf16", "fp32")
    )
    device: str = param("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    sharding: str = sharding_param()
    seed: int = param(0, "Seed for initialisation, prompt order, sampling and the held-out split.")
    output_dir: str = param("runs/rl", "Run directory (metrics, checkpoints, policy/, model/).")
    resume: bool = param(False, "Continue from the last checkpoint in output_dir.")

    def validate(self) -> None:
        super().validate()
        if self.grader_sandbox is not None:
            resolve_mode(self.grader_sandbox, "grader_sandbox")
        check(
            self.prompt_dataset is not None,
            "prompt_dataset",
            None,
            "set it to a prompt file, folder or glob, e.g. prompt_dataset=prompts.jsonl",
        )
        check(
            not (self.grader and self.reward_model),
            "grader",
            self.grader,
            "set either grader or reward_model, not both",
        )
        positive = (
            "micro_batch_size", "eval_prompts", "lora_rank", "log_every", "sample_every",
            "save_every",
        )  # fmt: skip
        for name in positive:
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(self.kl_coeff >= 0, "kl_coeff", self.kl_coeff, "must be >= 0")
        check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, "k1 or k3")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        check(self.top_k >= 0, "top_k", self.top_k, "must be >= 0")
        check(self.cliprange > 0, "cliprange", self.cliprange, "must be positive")
        check(
            0.0 < self.eval_fraction < 1.0,
            "eval_fraction",
            self.eval_fraction,
            "must be between 0 and 1 (exclusive)",
        )
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")

    @property
    @abstractmethod
    def held_out_dataset(self) -> str | None:
        """The file of held-out prompts, if one was given."""

    @property
    @abstractmethod
    def learning_rate(self) -> float:
        """The peak learning rate (the method's base rate times its multiplier)."""

    @property
    @abstractmethod
    def eval_interval_steps(self) -> int:
        """Evaluate on the held-out prompts every this many steps."""

    @abstractmethod
    def total_steps(self, train_prompts: int) -> int:
        """Optimizer steps of the whole run, given the number of training prompts."""


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


@dataclass
class RLResult:
    run_dir: Path
    policy_dir: Path
    model_dir: Path | None
    eval_reward_before: float
    eval_reward_after: float
    eval_prompts: int
    steps: int
    best_checkpoints: list[dict[str, Any]] | None = None
    dropped_rows: list[str] = field(default_factory=list)
    """One line per dataset that lost rows to `bad_rows=skip` (listed in dropped_rows.jsonl)."""


@dataclass
class PromptData:
    """Training and held-out prompt records, with their token ids, and the datasets read
    (by path: their `dropped` rows are reported)."""

    train: list
    train_ids: list[list[int]]
    eval: list
    eval_ids: list[list[int]]
    sources: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scores:
    """What the reward said about a batch of answers.

    Attributes:
        rewards: one score per answer (penalties applied). Shape: (B,)
        sub_rewards: per named sub-grader, its score of every answer. Shape: (B,) each
        errors: per answer, how many grader errors were recorded. Shape: (B,)
        error_kinds: count of recorded errors by kind, over the batch.
    """

    rewards: torch.Tensor
    sub_rewards: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: torch.Tensor | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)


RewardFn = Callable[[list, list[str], list[bool]], torch.Tensor]
"""(prompt records, decoded answers, whether each answer ended) -> one score each (B,)."""


def train_rl(config: RLCommonConfig, reward_fn: RewardFn | None = None) -> RLResult:
    """Tune a policy with PPO (`RLConfig`) or GRPO / RLOO (`GRPOConfig`).

    The reward is `config.reward_model` (a train-reward folder), `config.grader` (a grader
    file), or `reward_fn` when given (any Python scoring function, e.g. a rule with a known
    optimum).
    """
    if isinstance(config, RLConfig):
        return PPOTrainer(config, reward_fn).run()
    from rlhfkit.train.grpo import GRPOTrainer

    return GRPOTrainer(config, reward_fn).run()


def load_rl_config(
    path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None
) -> RLCommonConfig:
    """`RLConfig` for method=ppo (the default), `GRPOConfig` for grpo and rloo: defaults <
    YAML file < overrides."""
    from rlhfkit.config import build_config, parse_overrides, read_yaml
    from rlhfkit.train.grpo import GRPOConfig

    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values = {**(read_yaml(path) if path else {}), **(overrides or {})}
    method = str(values.get("method", "ppo"))
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not an RL method; choose one of {METHODS}")
    cls = RLConfig if method == "ppo" else GRPOConfig
    return build_config(cls, values, source=str(path) if path else "overrides")


def resume_settings(config: RLCommonConfig) -> dict[str, Any]:
    """The settings a checkpoint keeps and a resume compares: PPO's mini-batch as used (a
    default that follows batch_size is compared by its value)."""
    values = to_dict(config)
    if isinstance(config, RLConfig):
        values["ppo_mini_batch_size"] = config.mini_batch_size
    return values


def prepare_prompts(config: RLCommonConfig, tokenizer) -> PromptData:
    """Load the prompts, hold out the evaluation prompts and encode both."""
    from rlhfkit.data.formats import load_prompts

    dataset = load_prompts(config.prompt_dataset, config.bad_rows)
    sources = {config.prompt_dataset: dataset}
    for warning in dataset.warnings:
        logger.warning(warning)
    records = dataset.records
    if config.held_out_dataset:
        held_out = load_prompts(config.held_out_dataset, config.bad_rows)
        sources[config.held_out_dataset] = held_out
        eval_records = held_out.records
    else:
        if len(records) < 2:
            raise RlhfkitError(
                f"{config.prompt_dataset} has {len(records)} prompt(s): at least 2 are needed "
                "to hold one out; add rows or give a held-out prompt file"
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
    return PromptData(records, train_ids, eval_records, eval_ids, sources)


def _missing_end_penalty(rewards: torch.Tensor, ended: list[bool], penalty: float) -> torch.Tensor:
    if not penalty:
        return rewards
    return rewards - penalty * (~torch.tensor(ended, dtype=torch.bool)).float()


class RewardScorer:
    """Scores answers with a reward model, sharing the policy's base weights when it can."""

    def __init__(self, config: RLCommonConfig, policy: PolicyModel):
        from rlhfkit.eval.score import encoder_for
        from rlhfkit.models.loading import load_tokenizer
        from rlhfkit.models.reward import attach_reward_model, load_reward_model

        spec = read_reward_spec(config.reward_model)
        self.shared = (
            spec.base_model == config.large_model_reference
            and not spec.full_finetune
            and not spec.trunk_layers
        )
        if self.shared:
            self.model = attach_reward_model(config.reward_model, policy.backbone)
        else:
            self.model = load_reward_model(config.reward_model, config.dtype, config.device)
        self.encoder = encoder_for(self.model, load_tokenizer(spec.base_model))
        self.penalty = config.missing_eos_penalty
        self.micro_batch_size = config.micro_batch_size

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        """One score per answer (the missing-end penalty applied)."""
        from rlhfkit.eval.score import score_texts

        scores = score_texts(
            self.model,
            self.encoder,
            [r.messages for r in records],
            [[a] for a in answers],
            batch_size=self.micro_batch_size,
            ended=[[e] for e in ended],
        )
        rewards = torch.tensor([s[0] for s in scores], dtype=torch.float32)
        return Scores(_missing_end_penalty(rewards, ended, self.penalty))


class GraderScorer:
    """Scores answers with a grader file; the item is the whole dataset row."""

    shared = False

    def __init__(self, config: RLCommonConfig):
        from rlhfkit.graders import load_grader

        self.grader = load_grader(config.grader, sandbox=config.grader_sandbox)
        self.penalty = config.missing_eos_penalty

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        results = self.grader.grade_batch(answers, [grader_item(r) for r in records])
        rewards = torch.tensor([r.reward for r in results], dtype=torch.float32)
        names = sorted({name for r in results for name in r.sub_rewards})
        sub = {
            n: torch.tensor([r.sub_rewards.get(n, float("nan")) for r in results]) for n in names
        }
        kinds = Counter(error.get("kind", "error") for r in results for error in r.errors)
        errors = torch.tensor([len(r.errors) for r in results], dtype=torch.float32)
        return Scores(_missing_end_penalty(rewards, ended, self.penalty), sub, errors, dict(kinds))

    def close(self) -> None:
        self.grader.close()


class FunctionScorer:
    """Scores answers with a Python function (`train_rl(config, reward_fn=...)`)."""

    shared = False

    def __init__(self, reward_fn: RewardFn):
        self.reward_fn = reward_fn

    def __call__(self, records: list, answers: list[str], ended: list[bool]) -> Scores:
        return Scores(torch.as_tensor(self.reward_fn(records, answers, ended)).float())


class RLTrainer(ABC):
    """What every RL method shares: prompts, the policy (and reference) on one base, the
    reward, the loop with evaluation, checkpoints and resume, the update loop, outputs."""

    with_value_head = False
    eval_metric = "eval/reward"
    eval_prefix = "eval/"
    """The held-out metrics are eval_metric, then `{eval_prefix}reward_std` and
    `{eval_prefix}response_length`."""
    reward_metric = "reward"

    def __init__(self, config: RLCommonConfig, reward_fn: RewardFn | None = None):
        from rlhfkit.models.loading import load_tokenizer, resolve_device, resolve_dtype

        self.config = config
        self.run_dir = Path(config.output_dir)
        # the reward: a Python function, a grader file, or a reward model (attached to the
        # policy's base below); a bad grader file or reward folder fails before any loading
        scorer: FunctionScorer | GraderScorer | None = None
        if reward_fn is not None:
            scorer = FunctionScorer(reward_fn)
        elif config.grader is not None:
            scorer = GraderScorer(config)
        elif config.reward_model is not None:
            read_reward_spec(config.reward_model)
        else:
            raise ConfigError(
                "no reward: set reward_model to the reward_model/ folder written by "
                "`rlhfkit train-reward` (e.g. reward_model=runs/reward/reward_model), "
                "or grader to a grader file (e.g. grader=examples/graders/summary.yaml)"
            )
        self.parallel = Parallel(config.device, config.sharding)
        self.parallel.check_divides(**self.global_batch_sizes())
        self.start_step, state = resume_point(config.resume, self.run_dir)
        torch.manual_seed(config.seed)
        # step 1. prompts: load, hold out, encode
        self.tokenizer = load_tokenizer(config.large_model_reference)
        self.data = prepare_prompts(config, self.tokenizer)
        self.data_digest = data_digest(self.data.sources)
        check_resume(
            state, resume_settings(config), self.data_digest, self.run_dir, self.parallel.is_main
        )
        self.total_steps = config.total_steps(len(self.data.train))
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        # step 2. policy (+ critic) + reference on one base; the reward beside them
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.policy = build_policy(
            config.large_model_reference,
            config.lora_rank,
            config.lora_alpha,
            list(config.lora_targets),
            with_value_head=self.with_value_head,
            dtype=config.dtype,
            device=config.device,
            seed=config.seed,
        )
        self.scorer = scorer or RewardScorer(config, self.policy)
        self.shared_reward = getattr(self.scorer, "shared", False)
        self.policy.train()
        self.train_policy, self.params, self.optimizer, self.scheduler = prepare_optimization(
            self.parallel, self.policy, config, self.total_steps, state
        )
        self.eval_before: float | None = None
        # training statistics of the steps since the last log line (kept in checkpoints, so
        # that a resumed run's first log line averages the same steps as an unbroken run's)
        self.window: list[dict[str, float]] = state["extra"].get("window", []) if state else []
        if state is not None:
            self.eval_before = state["extra"].get("eval_reward_before")

    def global_batch_sizes(self) -> dict[str, int]:
        """The batch sizes that every rank takes an equal share of."""
        return {"batch_size": self.config.batch_size}

    # ------------------------------------------------------------------ the run
    def run(self) -> RLResult:
        from rlhfkit.tracking import MetricsLogger, truncate_metrics

        config, main = self.config, self.parallel.is_main
        dropped: list[str] = []
        if main:
            write_config(self.run_dir, to_dict(config))
            dropped = record_dropped(self.data.sources, self.run_dir / DROPPED_ROWS_FILE)
            for line in dropped:
                logger.warning(line)
        if self.start_step and main:
            truncate_metrics(self.run_dir / "samples.jsonl", self.start_step)
        logger.info(
            "RL (%s): %d training prompts, %d held-out prompts, %d steps, %d trainable "
            "parameters, reward %s%s",
            config.method,
            len(self.data.train),
            len(self.data.eval),
            self.total_steps,
            sum(getattr(p, "ds_numel", p.numel()) for p in self.params.values()),
            config.reward_model or config.grader or "a Python function",
            " (sharing the policy's base weights)" if self.shared_reward else "",
        )
        metrics = MetricsLogger(self.run_dir, resume_step=self.start_step, enabled=main)
        try:
            if self.eval_before is None:
                before = self.evaluate()
                self.eval_before = before[self.eval_metric]
                metrics.log(0, before)
            last = self._loop(metrics)
        finally:
            metrics.close()
            if hasattr(self.scorer, "close"):
                self.scorer.close()
        # step 6. outputs: the adapter (+ value head) and the merged model
        policy_dir = self.run_dir / "policy"
        model_dir = self.run_dir / "model" if config.save_merged else None
        weights = self.parallel.trainable_state(self.params)
        if main:
            self.policy.save(policy_dir, weights)
            if model_dir is not None:
                export_merged(config.large_model_reference, policy_dir, model_dir)
        result = RLResult(
            self.run_dir,
            policy_dir,
            model_dir,
            self.eval_before,
            last[self.eval_metric],
            len(self.data.eval),
            self.total_steps,
            self._best_checkpoints(),
            dropped,
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        if main:
            atomic_write_json(self.run_dir / "summary.json", summary)
        self.parallel.barrier()
        return result

    def _loop(self, metrics) -> dict[str, float]:
        config, total = self.config, self.total_steps
        last_eval: dict[str, float] = {}
        window = self.window
        parallel = self.parallel
        bar = progress_bar(
            total, self.start_step, f"train-rl {config.method}", enabled=parallel.is_main
        )
        for step in range(self.start_step, total):
            indices = sample_indices(step, config.batch_size, len(self.data.train), config.seed)
            lr = self.scheduler.get_last_lr()[0]
            parallel.seed_sampling(config.seed, step)
            stats, samples = self._step(step, parallel.shard(indices))
            stats = parallel.reduce(stats)
            self.scheduler.step()
            window.append(stats)
            done = step + 1
            bar.update(1)
            shown = {"reward": f"{stats[self.reward_metric]:.3f}"}
            if "objective/kl" in stats:
                shown["kl"] = f"{stats['objective/kl']:.3f}"
            bar.set_postfix(shown)
            row: dict[str, Any] = {}
            if is_due(done, config.log_every, total):
                row.update(window_mean(window))
                row["learning_rate"] = lr
            if is_due(done, config.sample_every, total):
                self._log_samples(metrics, done, samples)
            evaluated = is_due(done, config.eval_interval_steps, total)
            if evaluated:
                last_eval = self.evaluate()
                row.update(last_eval)
                bar.write(
                    f"step {done}: held-out {self.eval_metric} "
                    f"{last_eval[self.eval_metric]:.4f} (before training {self.eval_before:.4f})"
                )
            if row:
                metrics.log(done, row)
            due = is_due(done, config.save_every, total) or (evaluated and self.keep_best)
            if due:
                self._save_checkpoint(done, last_eval.get(self.eval_metric) if evaluated else None)
        bar.close()
        return last_eval or self.evaluate()  # resumed after the final step: evaluate once

    # ------------------------------------------------------------------ checkpoints
    @property
    def keep_best(self) -> int:
        """Checkpoints with the best held-out score kept besides the newest (0: newest only)."""
        return getattr(self.config, "keep_best", 0)

    def _save_checkpoint(self, step: int, score: float | None) -> None:
        """Every rank gathers its part of the state; rank 0 writes it."""
        trainable = self.parallel.trainable_state(self.params)
        optimizer = self.parallel.optimizer_state(self.params)
        if not self.parallel.is_main:
            return
        ckpt.save_checkpoint(
            self.config.output_dir,
            step,
            trainable,
            optimizer,
            self.scheduler,
            extra={
                "config": resume_settings(self.config),
                "data": self.data_digest,
                "eval_reward_before": self.eval_before,
                "window": self.window,
            },
            keep=1 if self.keep_best else 2,
            score=score,
            keep_best=self.keep_best,
        )

    def _best_checkpoints(self) -> list[dict[str, Any]] | None:
        if not self.keep_best:
            return None
        return [
            {"path": str(path), "step": step, self.eval_metric: score}
            for path, step, score in ckpt.best_checkpoints(self.run_dir, self.keep_best)
        ]

    # ------------------------------------------------------------------ one step
    @abstractmethod
    def _step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        """One step on the prompts `indices`: returns its statistics and a few samples."""

    @abstractmethod
    def _loss(
        self, outputs: tuple[torch.Tensor | None, ...], take: Callable[[str], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one micro-batch from the policy's (logprobs, values, entropy) and its
        rows of the step's tensors (`take(name)`, (b, A) on the device), with statistics."""

    def _sample(self, prompt_ids: list[list[int]], **overrides: Any) -> Rollout:
        config, policy = self.config, self.policy
        sampling = {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            **overrides,
        }
        with self.parallel.full_weights(policy), autocast(policy.device, self.autocast):
            return policy.sample(
                prompt_ids, config.target_sequence_length, self.eos_id, self.pad_id, **sampling
            )

    def _score(self, records: list[dict], answers: list[str], rollout: Rollout):
        """The reward model's or grader's scores of the answers (a reward model may share
        the policy's base weights, so they are all present)."""
        with self.parallel.full_weights(self.policy):
            return self.scorer(records, answers, rollout.ended.tolist())

    @torch.no_grad()
    def _no_grad_pass(self, rollout: Rollout) -> tuple[torch.Tensor, ...]:
        """Policy log-probabilities, values and entropy of the rollout, in micro-batches, on
        the CPU. Shape: (B, A) each (values None without a critic)."""
        config, policy = self.config, self.policy
        parts: list[tuple[torch.Tensor | None, ...]] = []
        with self.parallel.full_weights(policy):  # gathered once for the whole pass
            for start in range(0, rollout.query_ids.shape[0], config.micro_batch_size):
                part = rollout.rows(slice(start, start + config.micro_batch_size), trim=False)
                with autocast(policy.device, self.autocast):
                    outputs = policy(part, config.temperature, with_entropy=True)
                parts.append(tuple(None if t is None else t.float().cpu() for t in outputs))
        return tuple(
            None if column[0] is None else torch.cat(column) for column in zip(*parts, strict=True)
        )

    @torch.no_grad()
    def _reference_pass(self, rollout: Rollout) -> torch.Tensor:
        """Reference log-probabilities of the rollout, in micro-batches, on the CPU. (B, A)"""
        config, policy = self.config, self.policy
        parts = []
        with self.parallel.full_weights(policy):  # gathered once for the whole pass
            for start in range(0, rollout.query_ids.shape[0], config.micro_batch_size):
                part = rollout.rows(slice(start, start + config.micro_batch_size), trim=False)
                with autocast(policy.device, self.autocast):
                    logprobs = policy.reference_logprobs(part, config.temperature)
                parts.append(logprobs.float().cpu())
        return torch.cat(parts)

    def _update(
        self,
        step: int,
        rollout: Rollout,
        batch: dict[str, torch.Tensor],
        epochs: int,
        mini_batch_size: int,
        first: tuple[torch.Tensor, ...] | None = None,
        record_old: bool = False,
    ) -> dict[str, float]:
        """`epochs` passes of clipped updates over mini-batches of the step's answers;
        returns the mean statistics.

        Args:
            batch: per-answer tensors the loss reads (old_logprobs, advantages, ...). (N, A)
            first: the policy's outputs for the whole batch, with their graph, computed
                before any update; the first epoch uses them instead of a new forward.
            record_old: the first epoch is one mini-batch (no update before its last
                micro-batch), so its forward passes give the old log-probabilities: they
                are written into batch["old_logprobs"] as it goes.
        """
        config, policy = self.config, self.train_policy
        size = rollout.query_ids.shape[0]
        mini_batch_size = max(1, mini_batch_size // self.parallel.world_size)  # this rank's
        sums: dict[str, float] = {}
        updates = 0
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        group = rollout.group
        for epoch in range(epochs):
            # shuffle whole groups: a group's answers share their prompt's computation
            groups = torch.randperm(size // group, generator=generator)
            order = (groups[:, None] * group + torch.arange(group)).flatten()
            if epoch == 0 and first is not None:
                order = torch.arange(size)
            for start in range(0, size, mini_batch_size):
                mini = order[start : start + mini_batch_size]
                totals: dict[str, float] = {}
                starts = range(0, len(mini), config.micro_batch_size)
                for micro_start in starts:
                    rows = mini[micro_start : micro_start + config.micro_batch_size]
                    reuse = epoch == 0 and first is not None
                    part = rollout.rows(rows, trim=not reuse)
                    width = part.response_ids.shape[1]
                    # gradients are combined over the ranks once, at the last micro-batch
                    last = micro_start == starts[-1]
                    with self.parallel.micro_batch(policy, last):
                        if reuse:
                            outputs = first
                        else:
                            with autocast(self.policy.device, self.autocast):
                                outputs = policy(
                                    part, config.temperature, with_entropy=epoch == 0 and record_old
                                )
                        if epoch == 0 and record_old:
                            old = outputs[0].detach().float().cpu()
                            batch["old_logprobs"][rows, :width] = old
                            if outputs[2] is not None:
                                batch["entropy"][rows, :width] = outputs[2].float().cpu()

                        def take(name: str, rows=rows, width=width) -> torch.Tensor:
                            return batch[name][rows][:, :width].to(self.policy.device)

                        loss, parts = self._loss(outputs, take)
                        weight = len(rows) / len(mini)
                        self.parallel.backward(loss * weight)
                    for key, value in {"loss": loss, **parts}.items():
                        totals[key] = totals.get(key, 0.0) + float(value.detach()) * weight
                totals["grad_norm"] = self.parallel.step(self.params)
                for key, value in totals.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        return {k: v / updates for k, v in sums.items()}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean score of the answers to the held-out prompts: greedy answers, or with
        `eval_samples` > 1 that many sampled answers per prompt (seeded: every evaluation
        of a run draws the same random numbers)."""
        config = self.config
        per_prompt = getattr(config, "eval_samples", 1)
        scores, lengths = [], []
        # each rank answers a share of the prompts
        eval_records = self.parallel.spread(self.data.eval)
        eval_ids = self.parallel.spread(self.data.eval_ids)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 7)
            for start in range(0, len(eval_records), config.micro_batch_size):
                records = eval_records[start : start + config.micro_batch_size]
                prompt_ids = eval_ids[start : start + config.micro_batch_size]
                records = [r for r in records for _ in range(per_prompt)]
                if per_prompt == 1:
                    rollout = self._sample(prompt_ids, do_sample=False)
                else:
                    rollout = self._sample(prompt_ids, per_prompt=per_prompt)
                answers = self._decode(rollout)
                scores.append(self._score(records, answers, rollout).rewards)
                lengths.append(rollout.response_mask.sum(1).float())
        all_scores = torch.tensor(
            self.parallel.gather(torch.cat(scores).tolist() if scores else [])
        )
        all_lengths = torch.tensor(
            self.parallel.gather(torch.cat(lengths).tolist() if lengths else [])
        )
        prefix = self.eval_prefix
        return {
            self.eval_metric: all_scores.mean().item(),
            f"{prefix}reward_std": all_scores.std().item() if len(all_scores) > 1 else 0.0,
            f"{prefix}response_length": all_lengths.mean().item(),
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


class PPOTrainer(RLTrainer):
    """PPO: one answer per prompt, a critic on the policy's trunk, GAE, clipped losses."""

    with_value_head = True

    def _step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        config, policy = self.config, self.policy
        records = [self.data.train[i] for i in indices]
        started = time.perf_counter()
        # step 3a. rollout: sample answers with the current policy
        rollout = self._sample([self.data.train_ids[i] for i in indices])
        answers = self._decode(rollout)
        rollout_seconds = time.perf_counter() - started
        # step 3b. score: reward model (or grader) on (prompt, answer)
        mark = time.perf_counter()
        scores = self._score(records, answers, rollout).rewards
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
                first = self.train_policy(rollout, config.temperature, with_entropy=True)
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
            advantages = whiten(self.parallel, advantages, mask)  # over every rank's answers
        forward_seconds = time.perf_counter() - mark
        # step 5. PPO epochs over mini-batches
        mark = time.perf_counter()
        batch = {
            "old_logprobs": old_logprobs,
            "old_values": old_values,
            "advantages": advantages,
            "returns": returns,
            "mask": mask,
        }
        update = self._update(
            step, rollout, batch, config.ppo_epochs, config.mini_batch_size, first=first
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
        return stats, self._samples(records, answers, scores)

    def _samples(self, records: list, answers: list[str], scores: torch.Tensor) -> list[dict]:
        return [
            {"prompt": _last_user_turn(r), "answer": a, "score": float(s)}
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

    def _loss(self, outputs, take):
        config = self.config
        logprobs, values = outputs[0], outputs[1]
        mask = take("mask")
        pl = policy_loss(logprobs, take("old_logprobs"), take("advantages"), mask, config.cliprange)
        vl = value_loss(values, take("old_values"), take("returns"), mask, config.cliprange_value)
        parts = {
            "policy_loss": pl.loss,
            "value_loss": vl.loss,
            "clipfrac": pl.clipfrac,
            "approx_kl": pl.approx_kl,
            "ratio": pl.ratio,
            "value_clipfrac": vl.clipfrac,
        }
        return pl.loss + config.vf_coef * vl.loss, parts


def _last_user_turn(record) -> str:
    text = record.messages[-1].content
    return text if len(text) <= 300 else text[:300] + "..."
