"""Reward-model training (Bradley-Terry): `rlhfkit train-reward` / `train_reward_model`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.algorithms.reward import bradley_terry_loss
from rlhfkit.config import check, param, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.errors import RlhfkitError
from rlhfkit.fileio import atomic_write_json
from rlhfkit.models.compiled import compile_blocks, compile_param, resolve_compile
from rlhfkit.models.generate import padded_width
from rlhfkit.models.reward import (
    ALL_LINEAR,
    ResponseBatch,
    RewardModel,
    RewardModelSpec,
    build_reward_model,
)
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import (
    autocast,
    is_due,
    prepare_optimization,
    progress_bar,
    release_free_memory,
    resume_point,
    sample_indices,
    split_held_out,
    split_to_count,
    trim_heap_during_forward,
    window_mean,
    write_config,
)
from rlhfkit.train.parallel import Parallel
from rlhfkit.train.sharding import sharding_param

logger = logging.getLogger(__name__)

REWARD_BASE_LEARNING_RATE = 5e-4
"""Learning rate at reward_model_learning_rate_multiplier=1.0 (the peak, after warm-up)."""

EVAL_ROWS_MAX = 5000


@dataclass
class RewardConfig(DataConfig):
    """Parameters of `rlhfkit train-reward` (names shared with the pipeline)."""

    preference_dataset: str | None = param(
        None, "Preference dataset (file, folder or glob) in any supported format."
    )
    eval_dataset: str | None = param(
        None, "Held-out preference dataset; its first 5000 rows are used for evaluation."
    )
    eval_fraction: float = param(
        0.1, "Fraction of preference_dataset held out for evaluation when eval_dataset is unset."
    )
    reward_model_train_steps: int = param(1000, "Optimizer steps.")
    reward_model_learning_rate_multiplier: float = param(
        1.0, f"Multiplies the base learning rate {REWARD_BASE_LEARNING_RATE:g}."
    )
    batch_size: int = param(16, "Preference pairs per optimizer step.")
    micro_batch_tokens: int = param(
        1024,
        "Most padded tokens (prompt + both answers, all pairs) in one forward/backward pass; "
        "gradients accumulate up to batch_size. Raise it on a GPU, lower it to save memory.",
    )
    pad_to_multiple: int = param(
        16, "Round padded prompt and answer widths up to this multiple (bounds kernel shapes)."
    )
    lora_rank: int = param(4, "LoRA rank of the adapter.")
    lora_alpha: float = param(8.0, "LoRA scaling numerator (scale = alpha / rank).")
    lora_targets: list[str] = param(
        list(ALL_LINEAR), "Module names that get LoRA adapters (comma-separated)."
    )
    full_finetune: bool = param(False, "Train every weight instead of a LoRA adapter.")
    head_init_std: float = param(0.0, "Std of the reward head's initial weights (0: zeros).")
    center_rewards_coeff: float = param(
        0.0, "Weight of the reward-centering term mean((r_c + r_r)^2); 0 turns it off."
    )
    use_margin: bool = param(True, "Subtract a row's `margin` field inside the loss when present.")
    warmup_steps: int = param(10, "Linear learning-rate warm-up steps.")
    lr_schedule: str = param(
        "cosine", "Learning-rate decay after warm-up.", choices=("cosine", "constant", "linear")
    )
    weight_decay: float = param(0.0, "AdamW weight decay.")
    max_grad_norm: float = param(1.0, "Gradient-norm clipping (0 turns it off).")
    log_every: int = param(10, "Log training metrics every N steps.")
    eval_every: int = param(100, "Evaluate on the held-out pairs every N steps (and at the end).")
    save_every: int = param(100, "Write a checkpoint every N steps (and at the end).")
    dtype: str = param(
        "auto", "Weights of the frozen base: auto, bf16 or fp32.", ("auto", "bf16", "fp32")
    )
    device: str = param("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    sharding: str = sharding_param()
    compile: bool | None = compile_param()
    seed: int = param(0, "Seed for initialisation, data order and the held-out split.")
    output_dir: str = param("runs/reward", "Run directory (metrics, checkpoints, reward_model/).")
    resume: bool = param(False, "Continue from the last checkpoint in output_dir.")

    def validate(self) -> None:
        super().validate()
        check(
            self.preference_dataset is not None,
            "preference_dataset",
            None,
            "set it to a preference file, folder or glob, e.g. preference_dataset=prefs.jsonl",
        )
        check(
            self.reward_model_train_steps >= 1,
            "reward_model_train_steps",
            self.reward_model_train_steps,
            "must be at least 1",
        )
        check(
            self.reward_model_learning_rate_multiplier > 0,
            "reward_model_learning_rate_multiplier",
            self.reward_model_learning_rate_multiplier,
            "must be positive",
        )
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        check(
            self.micro_batch_tokens >= 1,
            "micro_batch_tokens",
            self.micro_batch_tokens,
            "must be at least 1",
        )
        check(self.pad_to_multiple >= 1, "pad_to_multiple", self.pad_to_multiple, "must be >= 1")
        check(
            0.0 < self.eval_fraction < 1.0,
            "eval_fraction",
            self.eval_fraction,
            "must be between 0 and 1 (exclusive)",
        )
        check(self.lora_rank >= 1, "lora_rank", self.lora_rank, "must be at least 1")
        check(
            bool(self.lora_targets),
            "lora_targets",
            self.lora_targets,
            "name at least one module, e.g. q_proj,v_proj",
        )
        for name in ("log_every", "eval_every", "save_every"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")

    @property
    def learning_rate(self) -> float:
        return REWARD_BASE_LEARNING_RATE * self.reward_model_learning_rate_multiplier


@dataclass
class EncodedPair:
    """One preference pair as token ids (responses end with the end-of-sequence token)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float


@dataclass
class RewardResult:
    """What a finished run produced."""

    run_dir: Path
    reward_model_dir: Path
    eval_accuracy: float
    eval_rank_loss: float
    longer_baseline_accuracy: float
    train_pairs: int
    eval_pairs: int


def encode_pairs(records: list, encoder: PromptEncoder, use_margin: bool) -> list[EncodedPair]:
    """Encode preference records with one encoder (its truncation counts accumulate)."""
    pairs = []
    for record in records:
        margin = record.margin if (use_margin and record.margin is not None) else 0.0
        pairs.append(
            EncodedPair(
                prompt=encoder.encode_prompt(record.messages).ids,
                chosen=encoder.encode_response(record.chosen).ids,
                rejected=encoder.encode_response(record.rejected).ids,
                margin=float(margin),
            )
        )
    return pairs


def pair_batch(
    pairs: list[EncodedPair], pad_id: int, multiple: int = 1
) -> tuple[ResponseBatch, torch.Tensor]:
    """Rows 2i and 2i+1 are the chosen and rejected answer of pair i; margins (B,)."""
    responses = [ids for p in pairs for ids in (p.chosen, p.rejected)]
    batch = ResponseBatch.build([p.prompt for p in pairs], responses, pad_id, multiple)
    return batch, torch.tensor([p.margin for p in pairs], dtype=torch.float32)


def padded_tokens(pairs: list[EncodedPair], multiple: int = 1) -> int:
    """Tokens a micro-batch of `pairs` occupies once padded (prompt + two answers per pair)."""
    prompt = padded_width([len(p.prompt) for p in pairs], multiple)
    answer = padded_width([len(ids) for p in pairs for ids in (p.chosen, p.rejected)], multiple)
    return len(pairs) * (prompt + 2 * answer)


def micro_batches(
    pairs: list[EncodedPair], max_tokens: int, multiple: int = 1
) -> list[list[EncodedPair]]:
    """Split a batch into micro-batches of similar length, each within `max_tokens` padded
    tokens (a pair longer than that goes alone)."""
    ordered = sorted(pairs, key=lambda p: (len(p.prompt), max(len(p.chosen), len(p.rejected))))
    chunks: list[list[EncodedPair]] = []
    for pair in ordered:
        if chunks and padded_tokens([*chunks[-1], pair], multiple) <= max_tokens:
            chunks[-1].append(pair)
        else:
            chunks.append([pair])
    return chunks


@torch.no_grad()
def evaluate_pairs(
    model: RewardModel,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int = 1,
) -> dict[str, float]:
    """Held-out rank loss, accuracy and margin over all pairs."""
    was_training = model.training
    model.eval()
    chosen, rejected, margins = [], [], []
    for chunk in micro_batches(pairs, max_tokens, multiple):
        batch, margin = pair_batch(chunk, pad_id, multiple)
        with autocast(model.device, use_bf16):
            rewards = model(batch.to(model.device)).float().cpu()
        chosen.append(rewards[0::2])
        rejected.append(rewards[1::2])
        margins.append(margin)
    model.train(was_training)
    stats = bradley_terry_loss(torch.cat(chosen), torch.cat(rejected), torch.cat(margins))
    return {
        "eval/rank_loss": stats.rank_loss.item(),
        "eval/accuracy": stats.accuracy.item(),
        "eval/margin": stats.margin.item(),
    }


def longer_answer_accuracy(records: list) -> float:
    """Accuracy of the trivial rule "prefer the longer answer" (ties count half)."""
    if not records:
        return float("nan")
    score = 0.0
    for r in records:
        if len(r.chosen) != len(r.rejected):
            score += float(len(r.chosen) > len(r.rejected))
        else:
            score += 0.5
    return score / len(records)


def train_reward_model(config: RewardConfig) -> RewardResult:
    """Train a Bradley-Terry reward model; returns where it is and how well it ranks."""
    return RewardTrainer(config).run()


@dataclass
class PreparedData:
    """Encoded training and held-out pairs."""

    train: list[EncodedPair]
    eval: list[EncodedPair]
    eval_records: list
    pad_id: int


def prepare_data(config: RewardConfig) -> PreparedData:
    """Load the preference data, hold out the eval pairs and encode everything."""
    from rlhfkit.data.formats import load_dataset, load_preferences
    from rlhfkit.models.loading import load_tokenizer

    train_set = load_preferences(config.preference_dataset)
    train_records = train_set.records
    if config.eval_dataset:
        eval_records = load_dataset(config.eval_dataset, kind="preference").records[:EVAL_ROWS_MAX]
    else:
        if len(train_records) < 2:
            raise RlhfkitError(
                f"{config.preference_dataset} has {len(train_records)} pair(s): at least 2 are "
                "needed to hold one out; add rows or set eval_dataset"
            )
        train_idx, eval_idx = split_held_out(len(train_records), config.eval_fraction, config.seed)
        eval_records = [train_records[i] for i in eval_idx]
        train_records = [train_records[i] for i in train_idx]
    for warning in train_set.warnings:
        logger.warning(warning)
    tokenizer = load_tokenizer(config.large_model_reference)
    encoder = PromptEncoder.from_settings(tokenizer, config)
    train = encode_pairs(train_records, encoder, config.use_margin)
    logger.info(
        "training pairs: %s",
        encoder.counts.summary(config.prompt_sequence_length, config.target_sequence_length),
    )
    held_out = encode_pairs(
        eval_records, PromptEncoder.from_settings(tokenizer, config), config.use_margin
    )
    return PreparedData(train, held_out, eval_records, tokenizer.pad_token_id)


class RewardTrainer:
    """The reward-model training run: data, model, optimizer, loop, checkpoints, output."""

    def __init__(self, config: RewardConfig):
        from rlhfkit.models.loading import decoder_blocks, resolve_device, resolve_dtype

        self.config = config
        self.run_dir = Path(config.output_dir)
        self.parallel = Parallel(config.device, config.sharding)
        self.parallel.check_divides(batch_size=config.batch_size)
        self.start_step, state = resume_point(config.resume, self.run_dir)
        torch.manual_seed(config.seed)
        # step 1. data: load, hold out, encode
        self.data = prepare_data(config)
        # step 2. model, optimizer, schedule (restored when resuming)
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.model = build_reward_model(
            _spec(config), config.dtype, config.device, config.head_init_std, config.seed
        )
        self.model.train()
        blocks = decoder_blocks(self.model)
        if device.type == "cpu":
            trim_heap_during_forward(blocks)  # lowers the memory peak at no cost in speed
        steps = config.reward_model_train_steps
        self.compiled = resolve_compile(config.compile, device, self.parallel.sharding, steps)
        if self.compiled:
            compile_blocks(blocks)
            logger.info("decoder blocks compiled for training: the first step includes compiling")
        self.train_model, self.params, self.optimizer, self.scheduler = prepare_optimization(
            self.parallel, self.model, config, steps, state
        )
        self.baseline = longer_answer_accuracy(self.data.eval_records)

    def run(self) -> RewardResult:
        from rlhfkit.tracking import MetricsLogger

        config, data, main = self.config, self.data, self.parallel.is_main
        if main:
            write_config(self.run_dir, to_dict(config))
        logger.info(
            "reward model: %d train pairs, %d held-out pairs, %d trainable parameters, "
            "prefer-longer baseline on held-out pairs %.3f",
            len(data.train),
            len(data.eval),
            sum(getattr(p, "ds_numel", p.numel()) for p in self.params.values()),
            self.baseline,
        )
        metrics = MetricsLogger(self.run_dir, resume_step=self.start_step, enabled=main)
        try:
            last_eval = self._loop(metrics)
        finally:
            metrics.close()
        # step 5. the reward model for scoring and RL
        out = self.run_dir / "reward_model"
        weights = self.parallel.trainable_state(self.params)
        if main:
            self.model.save(out, weights)
        result = RewardResult(
            self.run_dir,
            out,
            last_eval["eval/accuracy"],
            last_eval["eval/rank_loss"],
            self.baseline,
            len(data.train),
            len(data.eval),
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        if main:
            atomic_write_json(self.run_dir / "summary.json", summary)
        self.parallel.barrier()
        return result

    def _loop(self, metrics) -> dict[str, float]:
        config, total = self.config, self.config.reward_model_train_steps
        last_eval: dict[str, float] = {}
        window: list[dict[str, float]] = []
        bar = progress_bar(total, self.start_step, "train-reward", enabled=self.parallel.is_main)
        for step in range(self.start_step, total):
            indices = sample_indices(step, config.batch_size, len(self.data.train), config.seed)
            lr = self.scheduler.get_last_lr()[0]
            stats = self._step([self.data.train[i] for i in self.parallel.shard(indices)])
            self.scheduler.step()
            window.append(stats)
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{stats['rank_loss']:.3f}", acc=f"{stats['accuracy']:.2f}")
            row: dict[str, Any] = {}
            if is_due(done, config.log_every, total):
                row.update(window_mean(window))
                row["learning_rate"] = lr
            if is_due(done, config.eval_every, total):
                last_eval = self.evaluate()
                row.update(last_eval)
                bar.write(
                    f"step {done}: held-out accuracy {last_eval['eval/accuracy']:.3f}, "
                    f"rank loss {last_eval['eval/rank_loss']:.4f}"
                )
            if row:
                metrics.log(done, row)
            if is_due(done, config.save_every, total):
                self._save_checkpoint(done)
        bar.close()
        return last_eval or self.evaluate()  # resumed after the final step: evaluate once

    def _save_checkpoint(self, done: int) -> None:
        """Every rank gathers its part of the state; rank 0 writes it."""
        trainable = self.parallel.trainable_state(self.params)
        optimizer = self.parallel.optimizer_state(self.params)
        if self.parallel.is_main:
            ckpt.save_checkpoint(
                self.config.output_dir,
                done,
                trainable,
                optimizer,
                self.scheduler,
                extra={"config": to_dict(self.config)},
            )

    def evaluate(self) -> dict[str, float]:
        """Held-out statistics over every held-out pair (each rank scores a share)."""
        share = self.parallel.spread(self.data.eval)
        stats = {"eval/rank_loss": 0.0, "eval/accuracy": 0.0, "eval/margin": 0.0}
        if share:
            with self.parallel.full_weights(self.model):
                stats = evaluate_pairs(
                    self.model,
                    share,
                    self.data.pad_id,
                    self.config.micro_batch_tokens * 2,
                    self.autocast,
                    self.config.pad_to_multiple,
                )
        keys = sorted(stats)
        sums = self.parallel.sum(torch.tensor([stats[k] * len(share) for k in keys]))
        stats = {k: v / len(self.data.eval) for k, v in zip(keys, sums.tolist(), strict=True)}
        return {**stats, "eval/longer_baseline_accuracy": self.baseline}

    def _step(self, batch_pairs: list[EncodedPair]) -> dict[str, float]:
        """One optimizer step over `batch_pairs`; returns the step's statistics."""
        config, model = self.config, self.model
        started = time.perf_counter()
        # step 3. forward and backward over micro-batches of similar length
        sums = {"rank_loss": 0.0, "accuracy": 0.0, "margin": 0.0}
        tokens = 0
        chunks = micro_batches(batch_pairs, config.micro_batch_tokens, config.pad_to_multiple)
        chunks = split_to_count(chunks, self.parallel.micro_batch_count(len(chunks)))
        for index, chunk in enumerate(chunks):
            batch, margin = pair_batch(chunk, self.data.pad_id, config.pad_to_multiple)
            tokens += batch.tokens
            # gradients are combined over the ranks once, at the last micro-batch
            with self.parallel.micro_batch(self.train_model, last=index == len(chunks) - 1):
                with autocast(model.device, self.autocast):
                    rewards = self.train_model(batch.to(model.device))
                stats = bradley_terry_loss(
                    rewards[0::2],
                    rewards[1::2],
                    margin.to(model.device),
                    config.center_rewards_coeff,
                )
                weight = len(chunk) / len(batch_pairs)
                self.parallel.backward(stats.loss * weight)
            for key in sums:
                sums[key] += getattr(stats, key).item() * weight
            if model.device.type == "cpu":
                release_free_memory()  # before the next micro-batch, of another shape
        # step 4. optimizer step
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


def _spec(config: RewardConfig) -> RewardModelSpec:
    return RewardModelSpec(
        base_model=config.large_model_reference,
        full_finetune=config.full_finetune,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_targets=list(config.lora_targets),
        instruction=config.instruction,
        prompt_sequence_length=config.prompt_sequence_length,
        target_sequence_length=config.target_sequence_length,
        use_chat_template=config.use_chat_template,
    )
