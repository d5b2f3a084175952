"""The RL trainer every method shares: prompts, the policy, the reward, the step loop.

`RLTrainer` loads and holds out the prompts, builds the policy (LoRA on the base, a critic
for PPO, the base with adapters off as the reference), builds the reward (`rollout.scorers`),
and runs the loop: each step samples, scores and updates (`_step`, written by each method:
`train.ppo.PPOTrainer`, `train.grpo.GRPOTrainer`), with logging, held-out evaluation and
checkpoints at their cadence. `train.methods.train_rl` picks the trainer for a config.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit import seeding
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.models.policy import PolicyOutputs, Rollout, build_policy, export_merged
from rlhfkit.models.scoring import check_reward_folder
from rlhfkit.models.shared_prompt import supports_packing
from rlhfkit.rollout.experience import Experience
from rlhfkit.rollout.scorers import FunctionScorer, GraderScorer, RewardFn, RewardScorer, Scorer
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import autocast, is_due, prepare_decoder_blocks, split_held_out
from rlhfkit.train.loop import Trainer
from rlhfkit.train.optim import prepare_optimization
from rlhfkit.train.rl_config import RLCommonConfig

logger = logging.getLogger(__name__)


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


class RLTrainer(Trainer):
    """What every RL method shares: prompts, the policy (and reference) on one base, the
    reward, evaluation on held-out prompts, the update over mini-batches, outputs."""

    with_value_head = False
    eval_metric = "eval/reward"
    eval_prefix = "eval/"
    """The held-out metrics are eval_metric, then `{eval_prefix}reward_std` and
    `{eval_prefix}response_length`."""
    reward_metric = "reward"

    def __init__(self, config: RLCommonConfig, reward_fn: RewardFn | None = None):
        from rlhfkit.models.loading import load_tokenizer

        self.stage = f"train-rl {config.method}"
        # the reward: a Python function, a grader file, or a reward model (attached to the
        # policy's base below); a bad grader file or reward folder fails before any loading
        scorer: Scorer | None = None
        if reward_fn is not None:
            scorer = FunctionScorer(reward_fn)
        elif config.grader is not None:
            scorer = GraderScorer(config.grader, config.grader_sandbox, config.missing_eos_penalty)
        elif config.reward_model is not None:
            check_reward_folder(config.reward_model)
        else:
            raise ConfigError(
                "no reward: set reward_model to the reward_model/ folder written by "
                "`rlhfkit train-reward` (e.g. reward_model=runs/reward/reward_model), "
                "or grader to a grader file (e.g. grader=examples/graders/summary.yaml)"
            )
        # step 1. engine, resume point, seed
        state = self._start(config)
        # step 2. prompts: load, hold out, encode
        self.tokenizer = load_tokenizer(config.large_model_reference)
        self.data = prepare_prompts(config, self.tokenizer)
        self._check_resume(state, self.data.sources)
        self.total_steps = config.total_steps(len(self.data.train))
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        # step 3. policy (+ critic) + reference on one base; the reward beside them
        self._build_policy(scorer, state)
        self.eval_before: float | None = state["extra"].get("eval_reward_before") if state else None
        self.last_eval: dict[str, float] = {}
        self._evaluated_at = -1
        self._step_samples: list[dict] = []

    def _build_policy(self, scorer: Scorer | None, state: dict[str, Any] | None) -> None:
        """The policy with its adapter (and critic), the reward, the optimizer."""
        from rlhfkit.models.loading import resolve_device, resolve_dtype

        config = self.config
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
        self.scorer = scorer or RewardScorer(
            config.reward_model,
            config.large_model_reference,
            self.policy.backbone,
            dtype=config.dtype,
            device=config.device,
            penalty=config.missing_eos_penalty,
            micro_batch_size=config.micro_batch_size,
        )
        self.compiled = prepare_decoder_blocks(
            self.policy.backbone, config.compile, device, self.parallel.sharding, self.total_steps
        )
        # compiled, a grouped pass packs each prompt with its answers (no key/value cache)
        self.policy.packed = self.compiled and supports_packing(self.policy.trunk)
        self.policy.train()
        self.train_policy, self.params, self.optimizer, self.scheduler = prepare_optimization(
            self.parallel, self.policy, config, self.total_steps, state
        )

    # ------------------------------------------------------------------ the loop's parts
    def _describe(self) -> None:
        config = self.config
        logger.info(
            "RL (%s): %d training prompts, %d held-out prompts, %d steps, %d trainable "
            "parameters, reward %s%s",
            config.method,
            len(self.data.train),
            len(self.data.eval),
            self.total_steps,
            sum(getattr(p, "ds_numel", p.numel()) for p in self.params.values()),
            config.reward_model or _grader_name(config.grader) or "a Python function",
            " (sharing the policy's base weights)" if self.scorer.shared else "",
        )

    def _before_loop(self, metrics) -> None:
        """Samples logged after a resumed step are dropped; the held-out reward before
        training is measured once."""
        from rlhfkit.tracking import truncate_metrics

        if self.start_step and self.parallel.is_main:
            truncate_metrics(self.run_dir / "samples.jsonl", self.start_step)
        if self.eval_before is None:
            before = self.evaluate()
            self.eval_before = before[self.eval_metric]
            metrics.log(0, before)

    def _step(self, step: int, indices: list[int]) -> dict[str, float]:
        """The method's step (`_rl_step`) with its sampling seeded for the step and its
        statistics averaged over the ranks."""
        self.parallel.seed_sampling(self.config.seed, step)
        stats, self._step_samples = self._rl_step(step, indices)
        return self.parallel.reduce(stats)

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        shown = {"reward": f"{stats[self.reward_metric]:.3f}"}
        if "objective/kl" in stats:
            shown["kl"] = f"{stats['objective/kl']:.3f}"
        return shown

    def _after_step(self, metrics, done: int) -> None:
        if is_due(done, self.config.sample_every, self.total_steps):
            self._log_samples(metrics, done, self._step_samples)

    def _evaluate_at(self, done: int) -> dict[str, float]:
        self.last_eval, self._evaluated_at = self.evaluate(), done
        self.bar.write(
            f"step {done}: held-out {self.eval_metric} "
            f"{self.last_eval[self.eval_metric]:.4f} (before training {self.eval_before:.4f})"
        )
        return self.last_eval

    def _finish(self, metrics, done: int, dropped: list[str]) -> RLResult:
        """Step 5. outputs: the adapter (+ value head) and the merged model."""
        config, main = self.config, self.parallel.is_main
        last = self.last_eval or self.evaluate()  # resumed after the final step: evaluate once
        policy_dir = self.run_dir / "policy"
        model_dir = self.run_dir / "model" if config.save_merged else None
        weights = self.parallel.trainable_state(self.params)
        if main:
            self.policy.save(policy_dir, weights)
            if model_dir is not None:
                export_merged(config.large_model_reference, policy_dir, model_dir)
        return RLResult(
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

    def _close(self) -> None:
        self.scorer.close()

    # ------------------------------------------------------------------ checkpoints
    @property
    def _keep_best(self) -> int:
        """Checkpoints with the best held-out score kept besides the newest (0: newest only)."""
        return self.config.keep_best

    @property
    def _keep_newest(self) -> int:
        return 1 if self._keep_best else 2

    def _checkpoint_due(self, done: int, evaluated: bool) -> bool:
        return evaluated and bool(self._keep_best)

    def _checkpoint_score(self, done: int) -> float | None:
        return self.last_eval.get(self.eval_metric) if self._evaluated_at == done else None

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"eval_reward_before": self.eval_before}

    def _best_checkpoints(self) -> list[dict[str, Any]] | None:
        if not self._keep_best:
            return None
        return [
            {"path": str(path), "step": step, self.eval_metric: score}
            for path, step, score in ckpt.best_checkpoints(self.run_dir, self._keep_best)
        ]

    # ------------------------------------------------------------------ one step
    @abstractmethod
    def _rl_step(self, step: int, indices: list[int]) -> tuple[dict[str, float], list[dict]]:
        """One step on this rank's prompts `indices`: its statistics and a few samples."""

    @abstractmethod
    def _loss(
        self, outputs: PolicyOutputs, experience: Experience
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one micro-batch from the policy's outputs and the micro-batch's rows
        of the step's experience (both (b, A) on the device), with statistics."""

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
    def _no_grad_pass(self, rollout: Rollout) -> PolicyOutputs:
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
        return PolicyOutputs(
            *(
                None if column[0] is None else torch.cat(column)
                for column in zip(*parts, strict=True)
            )
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
        experience: Experience,
        epochs: int,
        mini_batch_size: int,
        first: PolicyOutputs | None = None,
        record_old: bool = False,
    ) -> dict[str, float]:
        """`epochs` passes of clipped updates over mini-batches of the step's answers;
        returns the mean statistics.

        Args:
            experience: what the loss reads per answer. (N, A) each
            first: the policy's outputs for the whole batch, with their graph, computed
                before any update; the first epoch uses them instead of a new forward.
            record_old: the first epoch is one mini-batch (no update before its last
                micro-batch), so its forward passes give the old log-probabilities: they
                are written into `experience` as it goes.
        """
        size = rollout.query_ids.shape[0]
        mini_batch_size = max(1, mini_batch_size // self.parallel.world_size)  # this rank's
        sums: dict[str, float] = {}
        updates = 0
        generator = seeding.update_shuffle(self.config.seed, step)
        group = rollout.group
        for epoch in range(epochs):
            # shuffle whole groups: a group's answers share their prompt's computation
            groups = torch.randperm(size // group, generator=generator)
            order = (groups[:, None] * group + torch.arange(group)).flatten()
            reuse = first if epoch == 0 else None
            if reuse is not None:
                order = torch.arange(size)
            for start in range(0, size, mini_batch_size):
                mini = order[start : start + mini_batch_size]
                totals = self._mini_batch(
                    rollout, experience, mini, reuse, epoch == 0 and record_old
                )
                for key, value in totals.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += bool(totals)  # a mini-batch with nothing to learn from took no step
        return {k: v / updates for k, v in sums.items()}

    def _mini_batch(
        self,
        rollout: Rollout,
        experience: Experience,
        mini: torch.Tensor,
        reuse: PolicyOutputs | None,
        record_old: bool,
    ) -> dict[str, float]:
        """One optimizer step over the answers `mini`, in micro-batches whose gradients
        accumulate; returns its statistics (weighted as the losses are, `_micro_weights`),
        none when no weight is left (no step)."""
        config, policy = self.config, self.train_policy
        totals: dict[str, float] = {}
        size = config.micro_batch_size
        chunks = [mini[start : start + size] for start in range(0, len(mini), size)]
        weights = self._micro_weights(experience, chunks)
        if not any(weights):
            return totals
        for index, (rows, weight) in enumerate(zip(chunks, weights, strict=True)):
            part = rollout.rows(rows, trim=reuse is None)
            # gradients are combined over the ranks once, at the last micro-batch
            with self.parallel.micro_batch(policy, index == len(chunks) - 1):
                outputs = reuse
                if outputs is None:
                    with autocast(self.policy.device, self.autocast):
                        outputs = policy(part, config.temperature, with_entropy=record_old)
                if record_old:
                    experience.record_old(rows, outputs.logprobs, outputs.entropy)
                width = part.response_ids.shape[1]
                rows_experience = experience.rows(rows, width, self.policy.device)
                loss, parts = self._loss(outputs, rows_experience)
                self.parallel.backward(loss * weight)
            for key, value in {"loss": loss, **parts}.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * weight
        totals["grad_norm"] = self.parallel.step(self.params)
        return totals

    def _micro_weights(self, experience: Experience, chunks: list[torch.Tensor]) -> list[float]:
        """Each micro-batch's (rows') weight in its mini-batch's loss: its share of the
        answers. A method may weigh otherwise; all 0 (on every rank): no optimizer step."""
        total = sum(len(rows) for rows in chunks)
        return [len(rows) / total for rows in chunks]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean score of the answers to the held-out prompts: greedy answers, or with
        `eval_samples` > 1 that many sampled answers per prompt (seeded: every evaluation
        of a run draws the same random numbers)."""
        config = self.config
        per_prompt = config.eval_samples
        scores, lengths = [], []
        # each rank answers a share of the prompts
        eval_records = self.parallel.spread(self.data.eval)
        eval_ids = self.parallel.spread(self.data.eval_ids)
        with seeding.seeded(seeding.evaluation(config.seed), self.policy.device):
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


def preview_text(record) -> str:
    """The prompt's last turn, cut to 300 characters (for logged samples)."""
    text = record.messages[-1].content
    return text if len(text) <= 300 else text[:300] + "..."


def _grader_name(grader: str | dict | None) -> str | None:
    """A grader file's path, or `grader NAME` for a grader given as a mapping."""
    if isinstance(grader, dict):
        return f"grader {grader.get('name', grader.get('type', ''))}".strip()
    return grader
