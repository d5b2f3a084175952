"""GPU check: rlhfkit's training passes and sampling on a GPU, in one short run.

Builds randomly initialised models from configurations (no download: weights do not change
what a step costs), writes them as Hugging Face folders with the bundled tokenizer, and runs
through rlhfkit's own trainers, on CUDA in bf16:

- the hardware's limits, measured: bf16 and fp32 matmul throughput and memory bandwidth
  (plus the data-sheet bf16 peak of the GPUs we know);
- per model shape (`smollm2-135m`, then the `llama2-7b` shape): reward-model steps, PPO
  steps (with that reward model), GRPO steps (a length reward), and sampling at batch 8;
  each with its time, tokens/s and peak GPU memory;
- the distributed path: `rlhfkit launch nproc=1 train-reward` with sharding none (DDP) and
  fsdp: one process joins an NCCL (gloo on CPU) process group and takes optimizer steps.

Fractions of the limit (the formulas):

- reward-model training pass: 4 x N_trunk FLOPs per token (forward 2N, backward for the
  input gradients 2N; the frozen base weights get no weight gradient, LoRA's own FLOPs are
  under 1%), N_trunk = parameters of the decoder layers; attention score FLOPs are left out
  (sequences under 1,000 tokens). Fraction = FLOPs per token x tokens/s / peak.
- sampling: every decode step reads the weights once (decoder layers + output layer, in
  bytes) and the KV cache of every sequence so far; bound tokens/s = batch x bandwidth /
  bytes per step (at the mean context length). Fraction = measured / bound.

`--tiny` runs the same on the CPU with a 2-layer model, in a minute (the test suite runs it),
so the script is known to work before a GPU is lent. Results go to --output after every part
(a run cut short keeps what it measured); a part that fails is recorded with its error and
the run goes on.

    python bench/gpu_check.py                 # on a GPU machine, about 4-6 minutes
    python bench/gpu_check.py --tiny          # CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import (  # noqa: E402
    decode_bound,
    make_pairs,
    make_prompts,
    measure_machine,
    model_shape,
    parameter_counts,
    peak_rss_mib,
    synchronize,
    write_datasets,
    write_prompts,
)
from grpo_step import rlhfkit_reward as length_reward  # noqa: E402  (answers near 30 words)

RESULTS_FILE = BENCH_DIR / "results" / "gpu_check.json"
SCRATCH_DIR = BENCH_DIR / "results" / "tmp" / "gpu_check"

LLAMA_LAYOUT = {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096}
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    "smollm2-135m": {  # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "llama2-7b": {  # meta-llama/Llama-2-7b-hf's config.json
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
}
"""Model shapes. Every shape takes the bundled tokenizer's vocabulary (49,152 tokens; Llama 2
has 32,000, so the 7B shape has 6.9B parameters instead of 6.7B)."""

BF16_DATASHEET_TFLOPS = {"H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0}
"""Dense bf16 tensor-core peak (TFLOP/s, without sparsity) by GPU name, from NVIDIA's data
sheets; matched in this order against torch.cuda.get_device_name()."""


# --------------------------------------------------------------------------- settings


def settings(tiny: bool) -> dict[str, Any]:
    """What each part runs: shapes, data sizes, steps, batch and lengths."""
    if tiny:
        return {
            "device": "cpu",
            "dtype": "fp32",
            "shapes": ["tiny"],
            "pairs": 24,
            "prompts": 12,
            "reward_steps": 2,
            "rl_steps": 2,
            "batch_size": 4,
            "group_size": 2,
            "prompt_length": 256,
            "response_length": 16,
            "sample_batch": 4,
            "sample_tokens": 16,
            "matmul_size": 512,
            "copy_mib": 64,
            "launch_shape": "tiny",
        }
    return {
        "device": "cuda",
        "dtype": "bf16",
        "shapes": ["smollm2-135m", "llama2-7b"],
        "pairs": 96,
        "prompts": 48,
        "reward_steps": 4,
        "rl_steps": 3,
        "batch_size": 8,
        "group_size": 4,
        "prompt_length": 512,
        "response_length": 64,
        "sample_batch": 8,
        "sample_tokens": 128,
        "matmul_size": 8192,
        "copy_mib": 2048,
        "launch_shape": "smollm2-135m",
    }


# --------------------------------------------------------------------------- the machine


def machine_limits(cfg: dict[str, Any]) -> dict[str, Any]:
    """Matmul throughput (bf16, fp32) and copy bandwidth on the run's device (`common`),
    with the data-sheet bf16 peak of the GPUs we know."""
    import torch

    out = measure_machine(cfg["device"], cfg["matmul_size"], cfg["copy_mib"])
    if cfg["device"] == "cuda":
        name = torch.cuda.get_device_name()
        out["gpu"] = name
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        sheet = next((v for k, v in BF16_DATASHEET_TFLOPS.items() if k in name), None)
        out["bf16_datasheet_tflops"] = sheet
    return out


# --------------------------------------------------------------------------- models and data


def build_model_folder(shape: str, folder: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """A randomly initialised Llama of `shape`, written as a Hugging Face folder with the
    bundled tokenizer (its chat template included)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **LLAMA_LAYOUT,
        **SHAPES[shape],
    )
    dtype = torch.bfloat16 if cfg["dtype"] == "bf16" else torch.float32
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(cfg["device"]):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    figures = parameter_counts(model)
    del model
    free_memory(cfg["device"])
    return {**figures, "build_seconds": round(time.perf_counter() - started, 1)}


def free_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def write_data(workdir: Path, cfg: dict[str, Any]) -> dict[str, Path]:
    """Preference pairs (generated news summaries) and summarisation prompts."""
    pairs, _ = write_datasets(make_pairs(cfg["pairs"], seed=0), workdir / "pairs", seed=0)
    prompts = make_prompts(cfg["prompts"] + 8, seed=0)
    return {
        "pairs": pairs,
        "prompts": write_prompts(prompts[: cfg["prompts"]], workdir / "prompts.jsonl"),
        "eval_prompts": write_prompts(prompts[cfg["prompts"] :], workdir / "eval_prompts.jsonl"),
    }


# --------------------------------------------------------------------------- the parts


class Memory:
    """Peak memory of one part: GPU memory allocated by PyTorch (reset at the start), or the
    process's peak resident memory so far on the CPU."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> Memory:
        import torch

        free_memory(self.device)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def figures(self) -> dict[str, float]:
        import torch

        if self.device == "cuda":
            return {"peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        return {"peak_process_rss_mib": round(peak_rss_mib(), 1)}


def fresh(folder: Path) -> Path:
    """`folder`, emptied: each part trains from scratch, also when the check runs again."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    from rlhfkit.tracking import read_metrics

    return [row for row in read_metrics(run_dir) if "timing/step" in row]


def after_first(rows: list[dict[str, Any]], key: str) -> float:
    """The mean of `key` over the steps after the first (warm-up) one, or the first alone."""
    values = [row[key] for row in rows if key in row]
    timed_values = values[1:] or values
    return sum(timed_values) / len(timed_values)


def reward_part(
    shape: str,
    model: Path,
    data: dict[str, Path],
    workdir: Path,
    cfg: dict[str, Any],
    peak: float,
    trunk_parameters: int,
) -> dict[str, Any]:
    """Reward-model training steps (LoRA, no head fit first); writes the reward model."""
    from rlhfkit.train.reward import RewardConfig, train_reward_model

    run_dir = fresh(workdir / f"reward_{shape}")
    config = RewardConfig(
        preference_dataset=str(data["pairs"]),
        large_model_reference=str(model),
        reward_model_train_steps=cfg["reward_steps"],
        batch_size=cfg["batch_size"],
        head_warm_start=False,
        head_init_std=0.02,
        eval_fraction=0.1,
        validation_fraction=0.0,
        log_every=1,
        eval_every=cfg["reward_steps"],
        save_every=cfg["reward_steps"],
        prompt_sequence_length=cfg["prompt_length"],
        target_sequence_length=cfg["response_length"] * 2,
        dtype=cfg["dtype"],
        device=cfg["device"],
        output_dir=str(run_dir),
    )
    with Memory(cfg["device"]) as memory:
        result = train_reward_model(config)
    rows = step_rows(run_dir)
    tokens_per_second = after_first(rows, "tokens_per_second")
    out = {
        "steps": len(rows),
        "step_seconds": [round(r["timing/step"], 3) for r in rows],
        "pairs_per_second": round(after_first(rows, "pairs_per_second"), 2),
        "tokens_per_second": round(tokens_per_second, 1),
        **memory.figures(),
        "reward_model": str(result.reward_model_dir),
    }
    flops = 4 * trunk_parameters * tokens_per_second
    out["achieved_tflops"] = round(flops / 1e12, 3)
    out["fraction_of_measured_matmul_peak"] = round(flops / 1e12 / peak, 4) if peak else None
    return out


def rl_config_common(model: Path, data: dict[str, Path], cfg: dict[str, Any], run_dir: Path):
    return {
        "prompt_dataset": str(data["prompts"]),
        "large_model_reference": str(model),
        "eval_prompts": 4,
        "batch_size": cfg["batch_size"],
        "prompt_sequence_length": cfg["prompt_length"],
        "target_sequence_length": cfg["response_length"],
        "log_every": 1,
        "sample_every": cfg["rl_steps"],
        "save_every": cfg["rl_steps"],
        "save_merged": False,
        "dtype": cfg["dtype"],
        "device": cfg["device"],
        "output_dir": str(run_dir),
    }


def rl_figures(rows: list[dict[str, Any]], phases: tuple[str, ...]) -> dict[str, Any]:
    seconds = after_first(rows, "timing/step")
    return {
        "steps": len(rows),
        "step_seconds": [round(r["timing/step"], 3) for r in rows],
        "steps_per_second": round(1 / seconds, 4),
        "answer_tokens_per_second": round(after_first(rows, "tokens_per_second"), 1),
        "phase_seconds": {p: round(after_first(rows, f"timing/{p}"), 3) for p in phases},
    }


def ppo_part(
    shape: str, model: Path, data: dict[str, Path], workdir: Path, cfg: dict[str, Any], rm: str
) -> dict[str, Any]:
    """PPO steps: sample, score with the reward model, reference/old passes, 4 epochs."""
    from rlhfkit.train.methods import train_rl
    from rlhfkit.train.ppo import RLConfig

    run_dir = fresh(workdir / f"ppo_{shape}")
    config = RLConfig(
        **rl_config_common(model, data, cfg, run_dir),
        reward_model=rm,
        reinforcement_learning_train_steps=cfg["rl_steps"],
        kl_coeff=0.05,
        ppo_epochs=4,
        ppo_mini_batch_size=cfg["batch_size"] // 2,
        micro_batch_size=cfg["batch_size"] // 2,
        eval_every=cfg["rl_steps"],
    )
    with Memory(cfg["device"]) as memory:
        train_rl(config)
    rows = step_rows(run_dir)
    return {
        **rl_figures(rows, ("rollout", "score", "forward", "update")),
        **memory.figures(),
    }


def grpo_part(
    shape: str, model: Path, data: dict[str, Path], workdir: Path, cfg: dict[str, Any]
) -> dict[str, Any]:
    """GRPO steps: groups of answers per prompt sharing the prompt's cache, graded, updated."""
    from rlhfkit.train.grpo import GRPOConfig, GRPOTrainer

    run_dir = fresh(workdir / f"grpo_{shape}")
    common = rl_config_common(model, data, cfg, run_dir)
    common["batch_size"] = cfg["batch_size"] // cfg["group_size"]
    config = GRPOConfig(
        **common,
        method="grpo",
        train_steps=cfg["rl_steps"],
        compute_multiplier=cfg["group_size"],
        micro_batch_size=cfg["batch_size"] // 2,
        kl_coeff=0.04,
        eval_interval=cfg["rl_steps"],
    )
    config.validate()
    with Memory(cfg["device"]) as memory:
        GRPOTrainer(config, length_reward).run()
    rows = step_rows(run_dir)
    return {**rl_figures(rows, ("sampling", "grading", "training")), **memory.figures()}


def sample_part(model: Path, data: dict[str, Path], cfg: dict[str, Any], bandwidth: float):
    """Sampling with rlhfkit's generation at batch `sample_batch`: tokens/s against the bound
    set by the bytes each decode step reads (weights and KV cache)."""
    import torch

    from rlhfkit.data.prompts import PromptEncoder
    from rlhfkit.data.records import Message
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(model))
    lm = load_model(str(model), dtype=cfg["dtype"], device=cfg["device"])
    rows = [json.loads(line) for line in data["prompts"].read_text().splitlines()]
    encoder = PromptEncoder(tokenizer, prompt_sequence_length=cfg["prompt_length"])
    prompts = [
        encoder.encode_prompt((Message("user", row["input_text"]),)).ids
        for row in rows[: cfg["sample_batch"]]
    ]
    new = cfg["sample_tokens"]
    with Memory(cfg["device"]) as memory:
        generate_answers(lm, tokenizer, prompts, max_new_tokens=8, do_sample=True)  # warm-up
        synchronize(cfg["device"])
        started = time.perf_counter()
        answers = generate_answers(
            lm, tokenizer, prompts, max_new_tokens=new, do_sample=True, temperature=1.0
        )
        synchronize(cfg["device"])
        seconds = time.perf_counter() - started
    generated = sum(len(tokenizer(a.text, add_special_tokens=False)["input_ids"]) for a in answers)
    tokens_per_second = len(prompts) * new / seconds
    element = torch.finfo(next(lm.parameters()).dtype).bits // 8
    shape = model_shape(str(model))
    context = sum(len(p) for p in prompts) / len(prompts) + new / 2
    bound = decode_bound(shape, len(prompts), context, bandwidth, element)
    step_bytes = len(prompts) * bandwidth * 1e9 / bound
    del lm
    return {
        "batch": len(prompts),
        "new_tokens_per_answer": new,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens_per_second, 1),
        "decoded_tokens": generated,
        "bytes_per_decode_step_mib": round(step_bytes / 2**20, 1),
        "bandwidth_bound_tokens_per_second": round(bound, 1),
        "fraction_of_bandwidth_bound": round(tokens_per_second / bound, 4),
        **memory.figures(),
    }


def launch_part(
    sharding: str, model: Path, data: dict[str, Path], workdir: Path, cfg: dict[str, Any]
) -> dict[str, Any]:
    """`rlhfkit launch nproc=1 train-reward ... sharding=...`: the process joins the process
    group (NCCL on a GPU, gloo on the CPU) and takes optimizer steps through the engine."""
    run_dir = fresh(workdir / f"launch_{sharding}")
    command = [
        sys.executable,
        "-m",
        "rlhfkit.cli",
        "launch",
        "nproc=1",
        "train-reward",
        f"preference_dataset={data['pairs']}",
        f"large_model_reference={model}",
        "reward_model_train_steps=2",
        f"batch_size={cfg['batch_size']}",
        "head_warm_start=false",
        "head_init_std=0.02",
        "eval_fraction=0.1",
        "validation_fraction=0",
        "log_every=1",
        f"prompt_sequence_length={cfg['prompt_length']}",
        f"target_sequence_length={cfg['response_length'] * 2}",
        f"dtype={cfg['dtype']}",
        f"device={cfg['device']}",
        f"sharding={sharding}",
        f"output_dir={run_dir}",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    backend = next((b for b in ("nccl", "gloo") if f"({b})" in output), None)
    rows = step_rows(run_dir) if done.returncode == 0 else []
    return {
        "exit_status": done.returncode,
        "ok": done.returncode == 0 and backend is not None and len(rows) == 2,
        "process_group_backend": backend,
        "steps": len(rows),
        "seconds": round(seconds, 1),
        "output_tail": output[-1500:] if done.returncode else "",
    }


# --------------------------------------------------------------------------- the run


class Report:
    """The results, written to `path` after every part."""

    def __init__(self, path: Path, head: dict[str, Any]):
        self.path = path
        self.data: dict[str, Any] = {**head, "parts": {}}
        self.failed: list[str] = []

    def part(self, name: str, fn, *args: Any) -> dict[str, Any] | None:
        print(f"gpu_check: {name} ...", flush=True)
        started = time.perf_counter()
        try:
            figures = fn(*args)
        except Exception as exc:  # a failed part is a result: record it and go on
            figures = None
            self.failed.append(name)
            self.data["parts"][name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
            }
            print(f"gpu_check: {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        else:
            figures["part_seconds"] = round(time.perf_counter() - started, 1)
            self.data["parts"][name] = figures
            print(f"gpu_check: {name}: {json.dumps(figures)}", flush=True)
        self.write()
        return figures

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("rlhfkit", "torch", "transformers", "peft")}


def run_check(args: argparse.Namespace) -> int:
    import torch

    cfg = settings(args.tiny)
    if args.shapes:
        cfg["shapes"] = args.shapes.split(",")
    unknown = [s for s in cfg["shapes"] if s not in SHAPES]
    if unknown:
        print(f"gpu_check: unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
        return 2
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --tiny on a CPU")
        return 2
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(args.output, {"settings": cfg, "versions": versions(), "tiny": args.tiny})
    data = write_data(workdir, cfg)
    limits = report.part("machine", machine_limits, cfg) or {}
    peak = limits.get("bf16_matmul_tflops" if cfg["dtype"] == "bf16" else "fp32_matmul_tflops")
    bandwidth = limits.get("copy_bandwidth_gb_s", 0.0)
    # the distributed check runs on the first shape: the launch shape when it is asked for
    ordered = [cfg["launch_shape"]] if cfg["launch_shape"] in cfg["shapes"] else []
    ordered += [s for s in cfg["shapes"] if s not in ordered]
    folders = {}
    for shape in ordered:
        folder = workdir / f"model_{shape}"
        built = report.part(f"{shape}/build", build_model_folder, shape, folder, cfg)
        if built:
            folders[shape] = (folder, built["trunk_parameters"])
    for index, shape in enumerate(ordered):
        if shape not in folders:
            continue
        model, trunk = folders[shape]
        rm = report.part(
            f"{shape}/reward", reward_part, shape, model, data, workdir, cfg, peak, trunk
        )
        if rm:
            report.part(
                f"{shape}/ppo", ppo_part, shape, model, data, workdir, cfg, rm["reward_model"]
            )
        report.part(f"{shape}/grpo", grpo_part, shape, model, data, workdir, cfg)
        report.part(f"{shape}/sample", sample_part, model, data, cfg, bandwidth)
        if index == 0:  # the distributed path, on the first shape
            for sharding in ("none", "fsdp"):
                figures = report.part(
                    f"launch/{sharding}", launch_part, sharding, model, data, workdir, cfg
                )
                if figures and not figures["ok"]:
                    report.failed.append(f"launch/{sharding}")
    print(f"gpu_check: results in {args.output}")
    if report.failed:
        print(f"gpu_check: failed parts: {', '.join(report.failed)}")
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, a 2-layer model, about a minute")
    parser.add_argument("--shapes", help=f"Comma-separated model shapes ({', '.join(SHAPES)})")
    parser.add_argument("--output", type=Path, help="JSON results (default: by mode)")
    parser.add_argument("--workdir", type=Path, default=SCRATCH_DIR, help="Scratch folder.")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = RESULTS_FILE.with_name("gpu_check_tiny.json") if args.tiny else RESULTS_FILE
    return args


if __name__ == "__main__":
    sys.exit(run_check(parse_args()))
