"""Reward-model training (Bradley-Terry): `rlhfkit train-reward` / `train_reward_model`."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit import seeding
from rlhfkit.algorithms.reward import bradley_terry_loss, fit_linear_head
from rlhfkit.config import check, param, to_dict
from rlhfkit.data.config import DataConfig
from rlhfkit.data.formats import Dataset
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.models.compiled import compile_blocks, compile_param, resolve_compile
from rlhfkit.models.generate import padded_width
from rlhfkit.models.loading import trainable_parameters
from rlhfkit.models.reward import (
    ALL_LINEAR,
    POOLINGS,
    ResponseBatch,
    RewardModel,
    RewardModelSpec,
    build_reward_model,
    load_reward_model,
)
from rlhfkit.stats import length_order, pair_accuracy, pairs_to_tell_from_chance
from rlhfkit.train import checkpoint as ckpt
from rlhfkit.train.common import (
    autocast,
    prepare_optimization,
    release_free_memory,
    restore_weights,
    split_held_out,
    split_to_count,
    trim_heap_during_forward,
)
from rlhfkit.train.loop import Trainer
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
    reward_model_train_steps: int = param(
        1000,
        "Optimizer steps (num_epochs, when set, wins and sets the steps instead); 0 with "
        "head_warm_start keeps the fitted head on the untrained model, with no training step.",
    )
    num_epochs: float | None = param(
        None,
        "Passes over the training pairs; when set, the run takes ceil(num_epochs * pairs / "
        "batch_size) steps and reward_model_train_steps is ignored.",
    )
    validation_fraction: float = param(
        0.1,
        "Share of the training pairs set aside for validation: evaluated every eval_every "
        "steps, and the step with the lowest validation rank loss becomes reward_model/. "
        "0: no validation; the last step is kept and the held-out pairs are evaluated instead.",
    )
    early_stopping_patience: int = param(
        0, "Stop after this many validations without a lower rank loss (0: never stop early)."
    )
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
    head_pooling: str = param(
        "mean",
        "What the head reads: the final hidden state of the answer's last token, or the "
        "mean over the answer's tokens.",
        choices=POOLINGS,
    )
    trunk_layers: int = param(
        0,
        "Decoder layers the reward model keeps: the first N, whose output (after the final "
        "norm) the head reads; training and scoring cost about N / all layers as much. "
        "0: every layer. bench/layer_probe.py measures what each layer's output knows.",
    )
    head_warm_start: bool = param(
        True,
        "Before training, fit the head on the training pairs' features of the untrained "
        "model (L2-regularised logistic regression, L2 weight by 5-fold cross-validation).",
    )
    center_rewards_coeff: float = param(
        0.0, "Weight of the reward-centering term mean((r_c + r_r)^2); 0 turns it off."
    )
    use_margin: bool = param(True, "Subtract a row's `margin` field inside the loss when present.")
    warmup_steps: int = param(
        10, "Linear learning-rate warm-up steps (a tenth of the run when not shorter than it)."
    )
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
            self.reward_model_train_steps >= (0 if self.head_warm_start else 1),
            "reward_model_train_steps",
            self.reward_model_train_steps,
            "must be at least 1 (0 only with head_warm_start=true: the fitted head alone)",
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
        check(
            0.0 <= self.validation_fraction < 1.0,
            "validation_fraction",
            self.validation_fraction,
            "must be in [0, 1): 0 turns validation off",
        )
        if self.num_epochs is not None:
            check(self.num_epochs > 0, "num_epochs", self.num_epochs, "must be positive")
            check(
                self.reward_model_train_steps != 0,
                "reward_model_train_steps",
                0,
                f"asks for no training step while num_epochs={self.num_epochs:g} asks for "
                "some: unset num_epochs, or set reward_model_train_steps >= 1",
            )
        check(
            self.early_stopping_patience >= 0,
            "early_stopping_patience",
            self.early_stopping_patience,
            "must be >= 0 (0: never stop early)",
        )
        if self.early_stopping_patience and not self.validation_fraction:
            raise ConfigError(
                f"early_stopping_patience={self.early_stopping_patience} needs validation "
                "pairs: set validation_fraction > 0 (e.g. 0.1) or early_stopping_patience=0"
            )
        check(self.lora_rank >= 1, "lora_rank", self.lora_rank, "must be at least 1")
        check(self.trunk_layers >= 0, "trunk_layers", self.trunk_layers, "must be >= 0 (0: all)")
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

    @property
    def eval_interval_steps(self) -> int:
        """Evaluate every this many steps."""
        return self.eval_every

    def resume_values(self) -> dict[str, Any]:
        """The settings a checkpoint keeps and a resume compares."""
        return to_dict(self)


@dataclass
class EncodedPair:
    """One preference pair as token ids (responses end with the end-of-sequence token)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float
    length_order: int = 0
    """1 when the chosen answer is longer (in characters), -1 when shorter, 0 when equal."""


@dataclass
class RewardResult:
    """What a finished run produced: the kept model's figures on the held-out pairs.

    `eval_accuracy` counts a tie as half a pair (`eval_ties` says how many there were);
    `eval_accuracy_ci95` is its 95% Wilson interval; `best_step` is the step whose weights
    were kept (the lowest validation rank loss, or the last step without validation).
    """

    run_dir: Path
    reward_model_dir: Path
    eval_accuracy: float
    eval_rank_loss: float
    longer_baseline_accuracy: float
    train_pairs: int
    eval_pairs: int
    eval_accuracy_ci95: list[float]
    eval_ties: int
    eval_accuracy_chosen_longer: float
    eval_accuracy_chosen_shorter: float
    validation_pairs: int
    steps: int
    best_step: int
    stopped_early: bool
    verdict: str
    dropped_rows: list[str] = field(default_factory=list)
    """One line per dataset that lost rows to `bad_rows=skip` (listed in dropped_rows.jsonl)."""


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
                length_order=length_order(record.chosen, record.rejected),
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


def score_pairs(
    model: RewardModel,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int = 1,
) -> torch.Tensor:
    """Rewards of every pair's chosen and rejected answer, in the order of `pairs`.

    Returns:
        fp32 rewards, column 0 the chosen and column 1 the rejected answer. Shape: (N, 2)
    """
    return pair_outputs(model, model, pairs, pad_id, max_tokens, use_bf16, multiple)


@torch.no_grad()
def pair_outputs(
    model: RewardModel,
    function,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int,
) -> torch.Tensor:
    """`function(batch)` of every pair's two answers (one row each), in the order of
    `pairs`, run in micro-batches of similar length with `model` in eval mode: rewards
    with `model` itself, the head's features with `model.features`.

    Returns:
        fp32 outputs. Shape: (N, 2, ...)
    """
    was_training = model.training
    model.eval()
    position = {id(pair): index for index, pair in enumerate(pairs)}
    out: torch.Tensor | None = None
    for chunk in micro_batches(pairs, max_tokens, multiple):
        batch, _ = pair_batch(chunk, pad_id, multiple)
        with autocast(model.device, use_bf16):
            values = function(batch.to(model.device)).float().cpu()  # (2 * len(chunk), ...)
        values = values.view(len(chunk), 2, *values.shape[1:])
        if out is None:
            out = torch.zeros(len(pairs), *values.shape[1:])
        out[torch.tensor([position[id(pair)] for pair in chunk])] = values
    model.train(was_training)
    return out if out is not None else torch.zeros(0, 2)


def pair_statistics(rewards: torch.Tensor, pairs: list[EncodedPair], prefix: str) -> dict:
    """Rank loss, margin and accuracy (with its interval, ties, the split by length and the
    prefer-longer rule) of `rewards` (N, 2) on `pairs`, keys named `{prefix}/...`."""
    margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    loss = bradley_terry_loss(rewards[:, 0], rewards[:, 1], margins)
    diffs = (rewards[:, 0] - rewards[:, 1]).tolist()
    accuracy = pair_accuracy(diffs, [p.length_order for p in pairs])
    return {
        f"{prefix}/rank_loss": loss.rank_loss.item(),
        f"{prefix}/margin": loss.margin.item(),
        **{f"{prefix}/{key}": value for key, value in accuracy.items()},
    }


def training_steps(config: RewardConfig, train_pairs: int) -> int:
    """Optimizer steps of the run: from num_epochs when set, else reward_model_train_steps."""
    if config.num_epochs is None:
        return config.reward_model_train_steps
    # rounded first: 1.1 * 100 / 10 is 11.000000000000002 in floating point, not 12 steps
    return max(1, math.ceil(round(config.num_epochs * train_pairs / config.batch_size, 9)))


def length_rule(longer_accuracy: float) -> tuple[str, float]:
    """The better of "prefer the longer answer" and "prefer the shorter one" (its accuracy is
    1 - the other's: equal lengths count half either way), named, with its accuracy."""
    if longer_accuracy >= 0.5:
        return "prefer-longer", longer_accuracy
    return "prefer-shorter", 1.0 - longer_accuracy


def verdict(stats: dict, prefix: str = "eval") -> str:
    """One sentence on whether the held-out figure tells the model from chance."""
    n, accuracy = stats[f"{prefix}/n"], stats[f"{prefix}/accuracy"]
    low, high = stats[f"{prefix}/accuracy_ci95_low"], stats[f"{prefix}/accuracy_ci95_high"]
    name, baseline = length_rule(stats[f"{prefix}/longer_baseline_accuracy"])
    if low > 0.5:
        rule = (
            "above" if low > baseline else ("below" if accuracy < baseline else "not clearly above")
        )
        return (
            f"better than chance on {n} held-out pairs (95% interval {low:.3f} to {high:.3f}); "
            f"{rule} the better length rule, {name} ({baseline:.3f})"
        )
    if high < 0.5:
        return f"worse than chance on {n} held-out pairs (95% interval {low:.3f} to {high:.3f})"
    needed = pairs_to_tell_from_chance(accuracy)
    more = (
        f"at an accuracy of {accuracy:.3f}, {needed} held-out pairs would be needed for the "
        "interval to exclude 0.5"
        if needed
        else "an accuracy of exactly 0.5"
    )
    return (
        f"cannot be told from chance on {n} held-out pairs (95% interval {low:.3f} to "
        f"{high:.3f} includes 0.5); {more}"
    )


def result_lines(result: dict[str, Any]) -> list[str]:
    """A finished run's figures as printed (from `RewardResult` fields, e.g. summary.json)."""
    low, high = result["eval_accuracy_ci95"]
    ties = result["eval_ties"]
    lines = [
        f"reward model: held-out accuracy {result['eval_accuracy']:.3f} (95% interval "
        f"{low:.3f} to {high:.3f}{f', {ties} ties counted as half' if ties else ''}) on "
        f"{result['eval_pairs']} pairs; prefer-longer rule "
        f"{result['longer_baseline_accuracy']:.3f}; where the chosen answer is longer "
        f"{_figure(result['eval_accuracy_chosen_longer'])}, shorter "
        f"{_figure(result['eval_accuracy_chosen_shorter'])}",
        f"  {result['verdict']}",
    ]
    lines += [f"  {line}" for line in result.get("dropped_rows", [])]
    if not result["steps"]:
        lines.append("  the head fitted on the base model's features alone: no training step")
    elif result["validation_pairs"]:
        stop = ", stopped early" if result["stopped_early"] else ""
        lines.append(
            f"  kept step {result['best_step']} of {result['steps']}{stop}: the lowest "
            f"validation rank loss on {result['validation_pairs']} pairs set aside from training"
            + (
                " (step 0: the fitted head, before any training step)"
                if not result["best_step"]
                else ""
            )
        )
    return lines


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def train_reward_model(config: RewardConfig) -> RewardResult:
    """Train a Bradley-Terry reward model; returns where it is and how well it ranks."""
    return RewardTrainer(config).run()


@dataclass
class PreparedData:
    """Encoded training, validation and held-out pairs."""

    train: list[EncodedPair]
    validation: list[EncodedPair]
    eval: list[EncodedPair]
    pad_id: int
    sources: dict[str, Dataset]
    """The datasets read, by path (their `dropped` rows are reported)."""


def prepare_data(config: RewardConfig) -> PreparedData:
    """Load the preference data, hold out the eval pairs, set validation pairs aside from
    the training pairs, and encode everything."""
    from rlhfkit.data.formats import load_dataset, load_preferences
    from rlhfkit.models.loading import load_tokenizer

    train_set = load_preferences(config.preference_dataset, config.bad_rows)
    sources = {config.preference_dataset: train_set}
    train_records = train_set.records
    if config.eval_dataset:
        held_out = load_dataset(config.eval_dataset, "preference", config.bad_rows)
        sources[config.eval_dataset] = held_out
        eval_records = held_out.records[:EVAL_ROWS_MAX]
    else:
        train_records, eval_records = _split(
            train_records, config.eval_fraction, config.seed, "evaluation", "set eval_dataset"
        )
    validation_records: list = []
    # with no training step there is no step to choose: every pair goes to the head's fit
    trains = config.num_epochs is not None or config.reward_model_train_steps > 0
    if config.validation_fraction and trains:
        train_records, validation_records = _split(
            train_records,
            config.validation_fraction,
            seeding.validation_split(config.seed),
            "validation",
            "set validation_fraction=0",
        )
    if not train_records:
        raise RlhfkitError(
            f"{config.preference_dataset}: no training pair is left after holding out "
            "evaluation and validation pairs; add rows, set eval_dataset, or lower "
            "eval_fraction / validation_fraction"
        )
    for warning in train_set.warnings:
        logger.warning(warning)
    tokenizer = load_tokenizer(config.large_model_reference)
    encoder = PromptEncoder.from_settings(tokenizer, config)
    train = encode_pairs(train_records, encoder, config.use_margin)
    logger.info(
        "training pairs: %s",
        encoder.counts.summary(config.prompt_sequence_length, config.target_sequence_length),
    )
    held_out = PromptEncoder.from_settings(tokenizer, config)
    return PreparedData(
        train,
        encode_pairs(validation_records, held_out, config.use_margin),
        encode_pairs(eval_records, held_out, config.use_margin),
        tokenizer.pad_token_id,
        sources,
    )


def _split(
    records: list, fraction: float, seed: int, purpose: str, instead: str
) -> tuple[list, list]:
    """(kept, set aside for `purpose`): a seeded random `fraction` of the records (at least
    one); `instead` says how to do without the split."""
    if len(records) < 2:
        raise RlhfkitError(
            f"{len(records)} training preference pair(s): at least 2 are needed to set one "
            f"aside for {purpose}; add rows, or {instead}"
        )
    kept, aside = split_held_out(len(records), fraction, seed)
    return [records[i] for i in kept], [records[i] for i in aside]


@dataclass
class BestStep:
    """The validation step with the lowest rank loss so far, and evaluations since then."""

    step: int = 0
    rank_loss: float = math.inf
    since: int = 0

    @property
    def found(self) -> bool:
        """Whether any validation was recorded (step 0 is a candidate: a fitted head)."""
        return math.isfinite(self.rank_loss)

    def update(self, step: int, rank_loss: float) -> bool:
        """Record a validation; True when it is a new best."""
        if rank_loss < self.rank_loss:
            self.step, self.rank_loss, self.since = step, rank_loss, 0
            return True
        self.since += 1
        return False


class RewardTrainer(Trainer):
    """The reward-model training run: pairs, the model and its fitted head, Bradley-Terry
    steps, validation with early stopping, the kept step written as reward_model/."""

    stage = "train-reward"

    def __init__(self, config: RewardConfig):
        # step 1. engine, resume point, seed
        state = self._start(config)
        self.best = BestStep(**(state["extra"].get("best", {}) if state else {}))
        # step 2. data: load, hold out, set validation pairs aside, encode
        self.data = prepare_data(config)
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
        from rlhfkit.models.loading import decoder_blocks, resolve_device, resolve_dtype

        config = self.config
        device = resolve_device(config.device)
        self.autocast = resolve_dtype(config.dtype, device) == torch.bfloat16
        self.model = build_reward_model(
            _spec(config), config.dtype, config.device, config.head_init_std, config.seed
        )
        if config.head_warm_start and state is None:
            self._warm_start_head()
        self.model.train()
        blocks = decoder_blocks(self.model)
        if device.type == "cpu":
            trim_heap_during_forward(blocks)  # lowers the memory peak at no cost in speed
        steps = self.total_steps
        self.compiled = resolve_compile(config.compile, device, self.parallel.sharding, steps)
        if self.compiled:
            compile_blocks(blocks)
            logger.info("decoder blocks compiled for training: the first step includes compiling")
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

    def _step(self, step: int, indices: list[int]) -> dict[str, float]:
        return self._pair_step([self.data.train[i] for i in indices])

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{stats['rank_loss']:.3f}", "acc": f"{stats['accuracy']:.2f}"}

    def _stop_after(self, done: int) -> bool:
        """Early stopping: no lower validation rank loss in `early_stopping_patience`
        evaluations."""
        patience = self.config.early_stopping_patience
        return bool(patience) and self.best.since >= patience

    def _stop_message(self, done: int) -> str:
        return (
            f"step {done}: no lower validation rank loss in "
            f"{self.config.early_stopping_patience} evaluations; stopping early "
            f"(best step {self.best.step})"
        )

    def _checkpoint_due(self, done: int, evaluated: bool) -> bool:
        return self.best.step == done  # a new best validation step

    def _checkpoint_score(self, done: int) -> float | None:
        return -self.best.rank_loss if self.best.step == done else None

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"best": vars(self.best)}

    @property
    def _keep_best(self) -> int:
        return 1

    def _finish(self, metrics, done: int, dropped: list[str]) -> RewardResult:
        """Step 5. the kept weights become the reward model; its held-out figures."""
        from rlhfkit.tracking import read_metrics

        data = self.data
        kept = self.best.step if data.validation and self.best.found else done
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

    def _evaluate_at(self, done: int) -> dict[str, float]:
        """Validation pairs when there are some (tracking the best step), else held-out."""
        pairs, prefix = (
            (self.data.validation, "valid") if self.data.validation else (self.data.eval, "eval")
        )
        stats = self.evaluate(pairs, prefix)
        if self.data.validation:
            self.best.update(done, stats["valid/rank_loss"])
        self.bar.write(
            f"step {done}: {'validation' if self.data.validation else 'held-out'} accuracy "
            f"{stats[f'{prefix}/accuracy']:.3f}, rank loss {stats[f'{prefix}/rank_loss']:.4f}"
        )
        return stats

    def _save_reward_model(self, kept: int, done: int) -> Path:
        """Write `reward_model/` from the weights of step `kept`: the model's own when it is
        the last step, else the kept checkpoint's."""
        out = self.run_dir / "reward_model"
        if kept == done:
            weights = self.parallel.trainable_state(self.params)
        else:
            weights = ckpt.load_checkpoint(ckpt.checkpoint_dir(self.run_dir, kept))["trainable"]
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

    def _pair_step(self, batch_pairs: list[EncodedPair]) -> dict[str, float]:
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
        pooling=config.head_pooling,
        trunk_layers=config.trunk_layers,
    )
