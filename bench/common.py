"""What the benchmark scripts share: measuring a process (memory, CPU), running one side in
a child process, the machine and versions, the command-line options every script takes,
the generated prompts of the RL benchmarks, and the generated preference pairs, their
batch order and figures of the pair benchmarks (bench/ is on sys.path when a script in it
runs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LAUNCH_ENVIRONMENT = dict(os.environ)
"""The environment this benchmark was started with. Each side's process starts from it, not
from this process's environment, which rlhfkit changes when imported here (it keeps PyTorch's
oneDNN shape cache small for itself: LRU_CACHE_CAPACITY); the peer must not inherit that."""


class RssSampler:
    """Samples this process's resident set size from a separate process and keeps the
    maximum (bytes).

    The sampler is a process, not a thread: a Python thread that wakes every 20 ms takes
    the GIL from the training thread, which slows code that holds the GIL while it
    computes (compiled kernels) far more than eager PyTorch, which releases it; the figure
    would be the sampler's doing. It also measures this process's CPU seconds per wall
    second over the block: about the number of threads when the machine is otherwise
    idle, less when something else competes.
    """

    SCRIPT = (
        "import select, sys, psutil\n"
        "process = psutil.Process(int(sys.argv[1]))\n"
        "peak = process.memory_info().rss\n"
        "while not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:\n"
        "    peak = max(peak, process.memory_info().rss)\n"
        "print(max(peak, process.memory_info().rss))\n"
    )

    def __init__(self, interval: float = 0.02):
        self._interval = interval
        self.peak = 0
        self.cores_busy = 0.0

    def __enter__(self) -> RssSampler:
        self._cpu, self._wall = _cpu_seconds(), time.perf_counter()
        self._sampler = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(os.getpid()), str(self._interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.cores_busy = (_cpu_seconds() - self._cpu) / (time.perf_counter() - self._wall)
        out, _ = self._sampler.communicate("stop\n", timeout=60)
        self.peak = int(out)  # sampled at the start, every interval, and at the end

    def figures(self) -> dict[str, float]:
        return {
            "peak_rss_sampled_during_training_mib": round(self.peak / 2**20, 1),
            "cores_busy_during_training": round(self.cores_busy, 2),
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process since it started (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).replace("torch.", "")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    warmup_steps: int,
    timed_steps: int,
    lora_rank: int,
    lora_alpha: int,
    results_file: Path,
    scratch_dir: Path,
) -> None:
    """The options every benchmark script takes, with that script's defaults: steps, LoRA
    size, seed, sides, where results and scratch files go, and the child-process options."""
    parser.add_argument(
        "--warmup-steps", type=int, default=warmup_steps, help="Untimed steps first."
    )
    parser.add_argument(
        "--timed-steps", type=int, default=timed_steps, help="Timed steps after them."
    )
    parser.add_argument("--lora-rank", type=int, default=lora_rank)
    parser.add_argument("--lora-alpha", type=int, default=lora_alpha)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sides", default="rlhfkit,trl", help="Comma-separated sides to run, in order."
    )
    parser.add_argument(
        "--output", type=Path, default=results_file, help="Where the JSON results go."
    )
    parser.add_argument(
        "--workdir", type=Path, default=scratch_dir, help="Scratch folder (data, runs)."
    )
    parser.add_argument(
        "--rlhfkit-compile",
        choices=("true", "false", "auto"),
        default="true",
        help="rlhfkit's compile setting (default true: what a run of >= 50 steps does by "
        "itself; auto would leave the benchmark's short run uncompiled).",
    )
    parser.add_argument("--child", choices=("rlhfkit", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)


def run_child(
    side: str,
    args: argparse.Namespace,
    model_dir: str,
    dtype: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one side in a fresh process of this script (`--child SIDE`); return its figures."""
    result_path = args.workdir / f"result_{side}.json"
    result_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(sys.argv[0]).resolve()),  # the script that was run
        *sys.argv[1:],
        "--child",
        side,
        "--workdir",
        str(args.workdir),
        "--model-dir",
        model_dir,
        "--dtype",
        dtype,
    ]
    env = {
        **LAUNCH_ENVIRONMENT,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **(extra_env or {}),
    }
    busy = machine_busy_cores()
    print(f"==> {side}: training in its own process (cores busy before: {busy:.2f})", flush=True)
    if busy > 0.25:
        print(
            f"warning: other processes keep {busy:.2f} cores busy; timings will be low. "
            "Stop other heavy processes and run again.",
            flush=True,
        )
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    print(f"==> {side}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return {**json.loads(result_path.read_text()), "cores_busy_before_start": round(busy, 2)}


def machine_busy_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by all processes over `seconds` (from /proc/stat; 0 if unreadable)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(1, total1 - total0)


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    mem_total = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_total,
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("rlhfkit", "torch", "transformers", "peft", "accelerate", "trl", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


_PEOPLE = [
    "Amira",
    "Bastian",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Keiko",
    "Lars",
    "Maren",
    "Nadia",
    "Oskar",
    "Priya",
]


_TEAMS = [
    "the maintenance team",
    "the finance office",
    "the events committee",
    "the IT helpdesk",
    "the grounds crew",
    "the purchasing group",
    "the safety officer",
    "the volunteer coordinators",
    "the catering staff",
    "the communications team",
    "the transport desk",
    "the library working group",
]


_TOPICS = [
    "the leaking roof above the main hall",
    "the new booking system for meeting rooms",
    "the autumn open day",
    "the contract for cleaning services",
    "the broken heating in the east wing",
    "the quarterly budget review",
    "the move to electronic invoices",
    "the staff survey",
    "the replacement of the old minibus",
    "the fire drill schedule",
    "the vegetable garden behind the car park",
    "the plan to open the cafeteria on Saturdays",
    "the shared printer on the second floor",
    "the visitor parking scheme",
]


_STATUS = [
    "is on schedule",
    "is running about {n} weeks late",
    "has gone {n} percent over budget",
    "was finished last {day}",
    "needs another quote before it can start",
    "is waiting for approval from the board",
    "has been paused until the spring",
    "was discussed with the landlord on {day}",
]


_FOLLOWUPS = [
    "{who} asked whether the costs could be shared with the neighbouring office.",
    "{who} will circulate a short written update before {day}.",
    "Several members felt that {topic} should take priority.",
    "{who} pointed out that the same problem came up {n} months ago.",
    "It was agreed to revisit the matter at the next meeting.",
    "{who} offered to contact the supplier directly.",
    "No decision was taken because {n} members were absent.",
    "{who} noted that visitors had sent {n} complaints about it.",
]


_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        n=rng.randint(2, 40),
        day=rng.choice(_DAYS),
        who=rng.choice(_PEOPLE),
        topic=rng.choice(_TOPICS),
    )


def _item(rng: random.Random) -> str:
    """One agenda item: who reported what, with up to two follow-up remarks."""
    who, team, topic = rng.choice(_PEOPLE), rng.choice(_TEAMS), rng.choice(_TOPICS)
    text = f"{who} from {team} reported that {topic} {_fill(rng.choice(_STATUS), rng)}."
    for followup in rng.sample(_FOLLOWUPS, rng.randint(0, 2)):
        text += " " + _fill(followup, rng)
    return text


def make_prompts(n: int, seed: int) -> list[str]:
    """Deterministic summarisation prompts: generated meeting minutes, "Summarise ...".

    Each prompt holds numbered agenda items up to a seeded budget of 150-260 words, which
    is about 210-400 tokens with the chat template.
    """
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        budget, items = rng.randint(150, 260), []
        while True:
            item = _item(rng)
            budget -= len(item.split())
            if budget < 0 and items:
                break
            items.append(item)
        minutes = "\n".join(f"{i + 1}. {item}" for i, item in enumerate(items))
        prompts.append(
            "Summarise these meeting minutes in two or three sentences for a colleague who "
            f"missed the meeting.\n\nMinutes of the {rng.choice(_DAYS)} staff meeting:\n{minutes}"
        )
    return prompts


def write_prompts(prompts: list[str], path: Path) -> Path:
    """Write prompts in the rlhf_pipeline text form (`input_text`), one JSON row a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps({"input_text": p}) + "\n" for p in prompts)
    path.write_text(rows, encoding="utf-8")
    return path


def prompt_figures(batches: list[list[list[int]]], args: argparse.Namespace) -> dict[str, Any]:
    """Prompt token counts: over all steps' prompts, and per prompt in the timed steps."""
    lengths = [len(ids) for batch in batches for ids in batch]
    timed = batches[args.warmup_steps :]
    real = sum(len(ids) for batch in timed for ids in batch)
    padded = sum(len(batch) * max(len(ids) for ids in batch) for batch in timed)
    rows = sum(len(batch) for batch in timed)
    return {
        "prompt_tokens_min": min(lengths),
        "prompt_tokens_max": max(lengths),
        "prompt_tokens_mean": round(statistics.mean(lengths), 1),
        "timed_real_prompt_tokens_per_row": round(real / rows, 1),
        "timed_padded_prompt_tokens_per_row": round(padded / rows, 1),
    }


def step_timing(step_seconds: list[float], warmup: int) -> dict[str, Any]:
    """PPO steps per second over the timed steps (those after `warmup`)."""
    timed = step_seconds[warmup:]
    return {
        "step_seconds": [round(s, 3) for s in step_seconds],
        "timed_seconds": round(sum(timed), 3),
        "median_step_seconds": round(statistics.median(timed), 3),
        "steps_per_second": round(len(timed) / sum(timed), 5),
    }


def response_figures(lengths: list[float], ended: list[float], warmup: int) -> dict[str, Any]:
    """Mean answer length (tokens, end token included) and share of answers that ended,
    per step and over the timed steps."""
    return {
        "response_length_per_step": [round(x, 2) for x in lengths],
        "mean_response_length": round(statistics.mean(lengths[warmup:]), 2),
        "ended_fraction_per_step": [round(x, 3) for x in ended],
        "mean_ended_fraction": round(statistics.mean(ended[warmup:]), 3),
    }


def report_head(
    benchmark: str, python: str, script: str, settings: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """The start of a results file: what ran, when, where, with what, and its figures."""
    from datetime import datetime, timezone

    return {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "command": " ".join([python, script] + [shlex.quote(a) for a in sys.argv[1:]]),
        "settings": settings,
        "results": results,
    }


def write_report(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")


def prompt_line(prompts: dict[str, Any]) -> str:
    """The RL benchmarks' prompt lengths, in one line."""
    return (
        f"prompts: {prompts['prompt_tokens_min']}-{prompts['prompt_tokens_max']} tokens "
        f"(mean {prompts['prompt_tokens_mean']}); timed batches "
        f"{prompts['timed_real_prompt_tokens_per_row']} real / "
        f"{prompts['timed_padded_prompt_tokens_per_row']} padded tokens per prompt"
    )


# The preference pairs of the pair benchmarks (reward-model and DPO training): generated
# local news reports with a summary of their own events (chosen) and of other events
# (rejected).


_SUBJECTS = [
    "the city council",
    "a regional hospital",
    "the school board",
    "a local bakery",
    "the water utility",
    "an independent bookshop",
    "the transport authority",
    "a farming cooperative",
    "the university library",
    "a small software company",
    "the harbour office",
    "a volunteer fire brigade",
    "the county museum",
    "a family-run hotel",
    "the weather service",
]
_VERBS = [
    "announced",
    "postponed",
    "approved",
    "reviewed",
    "criticised",
    "expanded",
    "cancelled",
    "funded",
    "delayed",
    "completed",
    "proposed",
    "investigated",
    "celebrated",
    "reduced",
]
_OBJECTS = [
    "a plan to renovate the old railway station",
    "new opening hours for the weekend",
    "the budget for road repairs",
    "a survey of residents about parking",
    "a programme of free evening classes",
    "the replacement of twenty delivery vans",
    "a study on air quality near the motorway",
    "a festival celebrating local music",
    "a pilot scheme for recycling electronics",
    "the merger of two primary schools",
    "an agreement with a neighbouring town",
    "a campaign to plant more street trees",
    "stricter rules for short-term rentals",
    "the digitisation of historical records",
]
_DETAILS = [
    "after months of debate",
    "despite objections from several residents",
    "following a sharp rise in costs",
    "in response to a petition signed by {n} people",
    "with support from a national grant of {n} thousand euros",
    "ahead of the winter season",
    "because of staff shortages",
    "after an inspection found {n} problems",
    "as part of a {n}-year strategy",
    "once the contractor had finished the first phase",
]
_EXTRAS = [
    "A spokesperson said the decision would be reviewed in {month}.",
    "Critics argued that the money could have been spent on {alt}.",
    "Around {n} people attended the public meeting where it was discussed.",
    "The local newspaper reported that {alt} had also been considered.",
    "Officials expect the first results to be visible by {month}.",
    "Several shop owners said they were worried about {alt}.",
    "The opposition asked for an independent audit before {month}.",
]
_ALTERNATIVES = [
    "better street lighting",
    "longer library hours",
    "more bus routes",
    "flood defences",
    "youth sports clubs",
    "repairs to the swimming pool",
    "affordable housing",
    "cheaper public parking",
    "the ageing sewer system",
    "the loss of weekend trade",
]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _fill_news(template: str, rng: random.Random) -> str:
    return template.format(
        n=rng.randint(3, 950), month=rng.choice(_MONTHS), alt=rng.choice(_ALTERNATIVES)
    )


def _event(rng: random.Random) -> tuple[str, str, str, str]:
    return (
        rng.choice(_SUBJECTS),
        rng.choice(_VERBS),
        rng.choice(_OBJECTS),
        _fill_news(rng.choice(_DETAILS), rng),
    )


def _sentence(event: tuple[str, str, str, str], rng: random.Random) -> str:
    subject, verb, obj, detail = event
    text = f"{subject[0].upper()}{subject[1:]} {verb} {obj} {detail}."
    if rng.random() < 0.6:
        text += " " + _fill_news(rng.choice(_EXTRAS), rng)
    return text


def _summary(events: list[tuple[str, str, str, str]], rng: random.Random, words: int) -> str:
    """A one- or two-sentence summary naming some of the events, about `words` words long."""
    parts = [f"{s} {v} {o}" for s, v, o, _ in events]
    text = parts[0][0].upper() + parts[0][1:]
    for part in parts[1:]:
        if len(text.split()) >= words:
            break
        text += f", while {part}"
    return " ".join(text.split()[: max(words, 8)]).rstrip(",") + "."


def make_pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """Deterministic summarisation-like preference pairs: long report, short summaries.

    Prompts report 8-12 generated news events (roughly 250-400 tokens with the chat
    template); the preferred answer summarises the report's own events, the rejected one
    events that are not in it. Both answers are 16-38 words (about 20-50 tokens).
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        events = [_event(rng) for _ in range(rng.randint(8, 12))]
        report = " ".join(_sentence(e, rng) for e in events)
        prompt = f"Summarise the following local news report in one or two sentences.\n\n{report}"
        chosen = _summary(rng.sample(events, 3), rng, rng.randint(16, 38))
        rejected = _summary([_event(rng) for _ in range(3)], rng, rng.randint(16, 38))
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def write_datasets(pairs: list[dict[str, Any]], folder: Path, seed: int) -> tuple[Path, Path]:
    """Write the pairs as rlhf_pipeline text rows (rlhfkit) and conversational TRL rows.

    The rlhf file puts the preferred answer at a seeded random candidate index (`choice`);
    the TRL file gives the prompt as one user turn and each answer as one assistant turn, so
    TRL applies the same chat template that rlhfkit applies to the prompt.
    """
    rng = random.Random(seed + 1)
    rlhf_rows, trl_rows = [], []
    for pair in pairs:
        choice = rng.randint(0, 1)
        candidates = (
            [pair["chosen"], pair["rejected"]]
            if choice == 0
            else [pair["rejected"], pair["chosen"]]
        )
        rlhf_rows.append(
            {
                "input_text": pair["prompt"],
                "candidate_0": candidates[0],
                "candidate_1": candidates[1],
                "choice": choice,
            }
        )
        trl_rows.append(
            {
                "prompt": [{"role": "user", "content": pair["prompt"]}],
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    rlhf_path, trl_path = folder / "pairs_rlhf_text.jsonl", folder / "pairs_trl.jsonl"
    for path, rows in ((rlhf_path, rlhf_rows), (trl_path, trl_rows)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rlhf_path, trl_path


def rlhfkit_batch_order(n_pairs: int, args: argparse.Namespace) -> list[list[int]]:
    """Row indices (into the written files) of the pairs in each of rlhfkit's optimizer steps.

    rlhfkit holds out `eval_fraction` of the rows (DPO: with no validation pairs set
    aside, `validation_fraction=0`), then draws every step's batch with `sample_indices`;
    TRL is given the same rows in the same order (sequential sampler).
    """
    from rlhfkit.train.common import sample_indices, split_held_out

    train_rows, _ = split_held_out(n_pairs, args.eval_fraction, args.seed)
    return [
        [train_rows[i] for i in sample_indices(step, args.batch_size, len(train_rows), args.seed)]
        for step in range(args.warmup_steps + args.timed_steps)
    ]


def timing_summary(step_seconds: list[float], warmup: int, batch_size: int) -> dict[str, Any]:
    """Pairs per second over the timed steps (those after `warmup`), from per-step seconds."""
    timed = step_seconds[warmup:]
    return {
        "step_seconds": [round(s, 4) for s in step_seconds],
        "timed_seconds": round(sum(timed), 3),
        "median_step_seconds": round(statistics.median(timed), 3),
        "pairs_per_second": round(len(timed) * batch_size / sum(timed), 4),
    }


def token_counts(real: list[int], padded: list[int], pairs: int) -> dict[str, float]:
    """Mean real and padded tokens per pair over the timed steps' batches."""
    return {
        "real_tokens_per_pair": round(sum(real) / pairs, 1),
        "padded_tokens_per_pair": round(sum(padded) / pairs, 1),
    }


def compile_setting(args: argparse.Namespace) -> bool | None:
    """rlhfkit's `compile` from `--rlhfkit-compile` (true, false, auto = None)."""
    return {"true": True, "false": False, "auto": None}[args.rlhfkit_compile]


# --------------------------------------------------------------------------- the machine's limits


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Seconds per call of `fn`, after one untimed call."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def measure_machine(device: str = "cpu", matmul_size: int = 2048, copy_mib: int = 512):
    """This machine's limits, measured once per benchmark run: the throughput of one large
    square matmul in bf16 and in fp32 (TFLOP/s, all threads) and the bandwidth of a large
    memory copy (GB/s, bytes read + written)."""
    import torch

    out: dict[str, Any] = {"device": device, "threads": torch.get_num_threads()}
    for dtype in ("bf16", "fp32"):
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        a = torch.randn(matmul_size, matmul_size, device=device, dtype=torch_dtype)
        b = torch.randn(matmul_size, matmul_size, device=device, dtype=torch_dtype)
        seconds = timed(lambda a=a, b=b: a @ b, device, repeats=10 if device == "cuda" else 3)
        out[f"{dtype}_matmul_tflops"] = round(2 * matmul_size**3 / seconds / 1e12, 3)
        del a, b
    size = copy_mib * 2**20 // 4
    src = torch.empty(size, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    seconds = timed(lambda src=src, dst=dst: dst.copy_(src), device, repeats=10)
    out["copy_bandwidth_gb_s"] = round(2 * src.numel() * 4 / seconds / 1e9, 1)
    return out


def parameter_counts(model) -> dict[str, Any]:
    """Parameters in all, in the decoder layers (N_trunk), and in the output layer."""
    layers = sum(p.numel() for p in model.model.layers.parameters())
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": total, "trunk_parameters": layers, "output_layer_parameters": head}


def model_shape(model_dir: str) -> dict[str, Any]:
    """What the efficiency formulas need of a model folder, from its config alone (the model
    is built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        **parameter_counts(model),
        "layers": config.num_hidden_layers,
        "kv_heads": config.num_key_value_heads,
        "head_dim": head_dim,
    }


EFFICIENCY_FORMULAS = {
    "fraction_of_bf16_peak": "model FLOPs of the step's passes / their seconds / the measured "
    "bf16 matmul peak. Model FLOPs per real (unpadded) token: 2 x N_trunk for a forward pass, "
    "2 x N_trunk more for its backward pass (LoRA: gradients of the activations through the "
    "frozen weights; the adapters' own are negligible), plus 2 x V x H per answer token for "
    "the output layer in each pass that computes log-probabilities (twice that with a "
    "backward pass). Attention's own FLOPs are left out (sequences under 1,000 tokens). "
    "The same useful work is counted for both libraries: whatever either computes beyond it "
    "(padding, logits over prompts, a second model) lowers its fraction",
    "fraction_of_bandwidth_bound": "answer tokens per second while sampling (prefill "
    "included) / the bound set by memory bandwidth: each decode step reads every weight "
    "(trunk and output layer) once and the key/value cache of every answer so far; bound = "
    "batch x measured copy bandwidth / bytes per step",
}


def decode_bound(
    shape: dict[str, Any], batch: int, context: float, bandwidth_gb_s: float, element: int = 2
) -> float:
    """Tokens per second at the memory-bandwidth bound of decoding `batch` answers with
    `context` tokens in the cache on average (weights and cache in `element`-byte floats)."""
    weights = (shape["trunk_parameters"] + shape["output_layer_parameters"]) * element
    cache = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * element * context
    return batch * bandwidth_gb_s * 1e9 / (weights + batch * cache)


def rl_step_efficiency(
    result: dict[str, Any],
    batches: list[list[list[int]]],
    per_prompt: int,
    passes: dict[str, float],
    shape: dict[str, Any],
    limits: dict[str, Any],
    warmup: int,
    sampling_phase: str | None = None,
) -> dict[str, Any]:
    """Fraction of the bf16 matmul peak an RL benchmark side's timed steps reach, and, where
    the side times its sampling (`sampling_phase`), its training passes alone and its
    sampling against the bandwidth bound (`EFFICIENCY_FORMULAS`).

    Args:
        result: the side's figures (`step_seconds`, `response_length_per_step`, phases).
        batches: each step's prompt token ids.
        per_prompt: answers per prompt.
        passes: how many times each token goes through the trunk: `trunk_forward`,
            `trunk_backward`; and how many times each answer token goes through the output
            layer: `head_forward`, `head_backward`.
        shape: `model_shape` of the model; limits: `measure_machine` figures.
    """
    trunk, head = shape["trunk_parameters"], shape["output_layer_parameters"]
    peak = limits["bf16_matmul_tflops"] * 1e12
    flops, seconds, prompt_tokens, answers_per_step = [], [], [], []
    for step in range(warmup, len(result["step_seconds"])):
        prompts = sum(len(ids) for ids in batches[step])
        answers = len(batches[step]) * per_prompt * result["response_length_per_step"][step]
        tokens = prompts + answers  # each prompt once for its answers
        flops.append(
            2 * trunk * tokens * (passes["trunk_forward"] + passes["trunk_backward"])
            + 2 * head * answers * (passes["head_forward"] + passes["head_backward"])
        )
        seconds.append(result["step_seconds"][step])
        prompt_tokens.append(prompts / len(batches[step]))
        answers_per_step.append(answers)
    out = {
        "model_tflops_per_step": round(statistics.mean(flops) / 1e12, 3),
        "fraction_of_bf16_peak_whole_step": round(sum(flops) / sum(seconds) / peak, 4),
    }
    if sampling_phase and "mean_phase_seconds" in result:
        sampling = result["mean_phase_seconds"][sampling_phase]
        training = sum(seconds) - sampling * len(seconds)
        out["fraction_of_bf16_peak_training_passes"] = round(sum(flops) / training / peak, 4)
        batch = len(batches[warmup]) * per_prompt
        answer = statistics.mean(answers_per_step) / batch
        context = statistics.mean(prompt_tokens) + answer / 2
        bound = decode_bound(shape, batch, context, limits["copy_bandwidth_gb_s"])
        rate = statistics.mean(answers_per_step) / sampling
        out["sampling_tokens_per_second"] = round(rate, 1)
        out["sampling_bandwidth_bound_tokens_per_second"] = round(bound, 1)
        out["fraction_of_bandwidth_bound_sampling"] = round(rate / bound, 4)
    return out


def efficiency_lines(results: dict[str, dict[str, Any]], limits: dict[str, Any]) -> list[str]:
    """One printed line per side: its fractions of the machine's measured limits."""
    lines = [
        f"machine: bf16 matmul {limits['bf16_matmul_tflops']:.3f} TFLOP/s, fp32 "
        f"{limits['fp32_matmul_tflops']:.3f}, copy bandwidth {limits['copy_bandwidth_gb_s']} GB/s"
    ]
    for side, r in results.items():
        line = f"{side}: {r['fraction_of_bf16_peak_whole_step']:.3f} of the bf16 peak (whole step)"
        if "fraction_of_bf16_peak_training_passes" in r:
            line += f", {r['fraction_of_bf16_peak_training_passes']:.3f} (training passes)"
        if "fraction_of_bandwidth_bound_sampling" in r:
            line += (
                f"; sampling {r['sampling_tokens_per_second']:.1f} tokens/s = "
                f"{r['fraction_of_bandwidth_bound_sampling']:.3f} of the bandwidth bound "
                f"({r['sampling_bandwidth_bound_tokens_per_second']:.0f})"
            )
        lines.append(line)
    return lines


def pair_step_efficiency(
    pairs_per_second: float,
    tokens_per_pair: float,
    answer_tokens_per_pair: float,
    shape: dict[str, Any],
    limits: dict[str, Any],
    head_passes: int,
) -> dict[str, Any]:
    """Fraction of the bf16 peak of training on preference pairs (`EFFICIENCY_FORMULAS`):
    each pair's real tokens (its prompt once and both answers) forward and backward through
    the trunk, and `head_passes` output-layer passes over the answer tokens (DPO: 2, forward
    and backward; a reward model: 0, its head gives one number per answer)."""
    trunk, head = shape["trunk_parameters"], shape["output_layer_parameters"]
    flops = 4 * trunk * tokens_per_pair + 2 * head * answer_tokens_per_pair * head_passes
    peak = limits["bf16_matmul_tflops"] * 1e12
    return {
        "model_gflops_per_pair": round(flops / 1e9, 2),
        "fraction_of_bf16_peak": round(flops * pairs_per_second / peak, 4),
    }


def machine_line(limits: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    """The measured limits and each side's fraction of the bf16 peak, in one line."""
    return (
        f"machine: bf16 matmul {limits['bf16_matmul_tflops']:.3f} TFLOP/s, copy bandwidth "
        f"{limits['copy_bandwidth_gb_s']} GB/s; "
        + ", ".join(f"{side} {r['fraction_of_bf16_peak']:.3f}" for side, r in results.items())
        + " of the bf16 peak (model FLOPs of the training passes)"
    )
