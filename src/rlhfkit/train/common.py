"""Pieces every training stage shares: data order, schedule, clipping, resuming, progress."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

from rlhfkit import seeding
from rlhfkit.errors import ConfigError
from rlhfkit.fileio import atomic_write_jsonl, check_output_path
from rlhfkit.models.loading import trainable_parameters
from rlhfkit.train import checkpoint as ckpt

logger = logging.getLogger(__name__)
T = TypeVar("T")


def sample_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Indices of the rows in optimizer step `step` (0-based).

    Every epoch is a fresh seeded permutation and batches run across epoch ends, so the
    order depends only on (seed, step): a resumed run sees exactly the same batches.
    """
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        generator = seeding.data_order(seed, epoch)
        out.append(int(torch.randperm(n, generator=generator)[offset]))
    return out


def split_held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) row indices: a seeded random `fraction` of rows (at least one) is held out."""
    order = torch.randperm(n, generator=seeding.held_out_split(seed)).tolist()
    held = max(1, round(n * fraction))
    return sorted(order[held:]), sorted(order[:held])


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled (a no-op context otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def lr_factor(total: int, warmup: int, schedule: str):
    """Multiplier of the peak learning rate at each step: warm-up, then the chosen decay
    (`cosine` to 10% of the peak, `linear` to 0, or `constant`)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return factor


def warmup_steps(asked: int, total: int, say: bool = True) -> int:
    """The warm-up a run of `total` steps gets: `asked`, unless the run is not longer than
    that (the learning rate would never reach its peak): then a tenth of the run, said (by
    the process that `say`s, rank 0 of a distributed run)."""
    if asked < total or total == 0:  # 0 steps: nothing to warm up
        return asked
    capped = total // 10
    if not say:
        return capped
    logger.warning(
        "warmup_steps=%d is not shorter than the run's %d steps: warming up for %d instead "
        "(a tenth of the run)",
        asked,
        total,
        capped,
    )
    return capped


def is_due(done: int, every: int, total: int) -> bool:
    """True every `every` steps and at the last step."""
    return done % every == 0 or done == total


def window_mean(window: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each statistic over the steps since the last log line (then emptied)."""
    means = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    window.clear()
    return means


def split_to_count(chunks: list[list[T]], count: int) -> list[list[T]]:
    """Split the largest chunks in two until there are `count` (when the ranks of a
    sharded run must run the same number of micro-batches). Every rank holds the same
    number of items and `count` is at most that, so a chunk of two or more is always left.
    """
    chunks = [list(chunk) for chunk in chunks]
    while len(chunks) < count:
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
        chunk = chunks[largest]
        half = len(chunk) // 2
        chunks[largest : largest + 1] = [chunk[:half], chunk[half:]]
    return chunks


RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "reward_model_train_steps",
        "reinforcement_learning_train_steps",
        "num_epochs",
        "n_epochs",
        "train_steps",
        "log_every",
        "eval_every",
        "eval_interval",
        "save_every",
        "sample_every",
        "early_stopping_patience",
        "eval_prompts",
        "eval_samples",
        "keep_best",
        "save_merged",
        "micro_batch_tokens",
        "micro_batch_size",
        "pad_to_multiple",
        "device",
        "compile",
        "sharding",
        "output_dir",
    }
)
"""Settings a resumed run may change: how long it runs, how often it logs, evaluates and
saves, and how it is computed (micro-batches, device, compiling); not what it learns from or
how. The number of processes is not a setting and may change too."""
RESUMES_FILE = "resumes.jsonl"
"""Where a run records each resume that changed a setting: {step, changed: {key: [old, new]}}."""


def data_digest(datasets: dict[str, Any]) -> str:
    """One digest of the contents the run's datasets were read from, in the order read (their
    own digests, made while reading: no file is read again)."""
    return hashlib.sha256("".join(d.content_digest for d in datasets.values()).encode()).hexdigest()


def check_resume(
    state: dict[str, Any] | None,
    config: dict[str, Any],
    digest: str,
    run_dir: Path,
    main: bool = True,
) -> None:
    """Refuse to resume a checkpoint made with other data or settings that change what the
    run learns (listing every change, old -> new, and what to do); record the changes that
    are allowed (`RESUME_MAY_CHANGE`) in the run's resumes.jsonl (by the `main` process)."""
    if state is None:
        return
    extra = state.get("extra", {})
    old = extra.get("config")
    if old is None:  # a checkpoint from before settings were kept in it
        return
    # a setting the checkpoint does not know (added since) was at its default then
    changed = {
        key: [old[key], config.get(key)]
        for key in sorted(old)
        if key in config and old[key] != config[key]
    }
    refused = [
        f"{key}: {a!r} -> {b!r}" for key, (a, b) in changed.items() if key not in RESUME_MAY_CHANGE
    ]
    if extra.get("data") not in (None, digest):
        refused.append("the data: the dataset files differ from those the run started with")
    if refused:
        raise ConfigError(
            f"resume=true: the checkpoint at step {state['step']} in {run_dir} was made with "
            f"other settings; resuming would mix two runs:\n  - "
            + "\n  - ".join(refused)
            + "\nresume with the settings and data it started with, or start a new run "
            "(another output_dir, or without resume=true after removing the old one)"
        )
    if changed and main:
        record = run_dir / RESUMES_FILE
        earlier = (
            [json.loads(line) for line in record.read_text().splitlines()]
            if record.is_file()
            else []
        )
        atomic_write_jsonl(record, [*earlier, {"step": state["step"], "changed": changed}])
        logger.info(
            "resuming at step %d with changed settings (recorded in %s): %s",
            state["step"],
            record,
            ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
        )


def resume_point(resume: bool, run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """(first step to run, checkpoint state): (0, None) for a fresh run. What a kill during a
    checkpoint write left behind is removed first; a run directory that cannot be written
    fails here, before any work."""
    check_output_path(run_dir, folder=True)
    for path in ckpt.remove_partial_writes(run_dir):
        logger.info("removed %s, a checkpoint whose writing was interrupted", path)
    latest = ckpt.latest_checkpoint(run_dir)
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"output_dir={str(run_dir)!r} already holds checkpoints; pass resume=true to "
                "continue that run, or choose a new output_dir"
            )
        return 0, None
    if latest is None:
        logger.info("resume=true but %s has no checkpoint: starting from step 0", run_dir)
        return 0, None
    state = ckpt.load_checkpoint(latest)
    logger.info("resuming from %s (step %d)", latest, state["step"])
    return int(state["step"]), state


class Optimization(NamedTuple):
    """What a trainer steps: the model to run training forwards through (wrapped or
    sharded), its trainable weights by name, the optimizer and the schedule."""

    train_model: torch.nn.Module
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def prepare_optimization(
    parallel, model: torch.nn.Module, config: Any, total_steps: int, state: dict | None
) -> Optimization:
    """AdamW and the warm-up/decay schedule over `model`'s trainable weights, under the
    run's parallel engine (DDP, FSDP or DeepSpeed ZeRO when launched on N ranks), with a
    checkpoint's weights, optimizer, schedule and RNG states put back when resuming."""
    if state is not None:
        restore_weights(state, trainable_parameters(model))  # before the engine shards them
    train_model, optimizer = parallel.prepare(
        model,
        lambda params: torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        config.max_grad_norm,
    )
    params = trainable_parameters(model)  # FSDP replaces them with shards
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_factor(
            total_steps,
            warmup_steps(config.warmup_steps, total_steps, parallel.is_main),
            config.lr_schedule,
        ),
    )
    if state is not None:
        parallel.load_optimizer_state(params, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state)
    return Optimization(train_model, params, optimizer, scheduler)


def restore_weights(state: dict[str, Any], params: dict[str, torch.nn.Parameter]) -> None:
    """Put a checkpoint's trainable weights back (into the plain model, before the
    parallel engine wraps or shards it)."""
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)


def release_free_memory() -> None:
    """Hand memory that is free but still resident back to the system (glibc only).

    Activations of different sizes leave holes in glibc's heap that it keeps resident after
    they are freed; over a run with many sequence lengths that costs hundreds of MiB.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def trim_heap_during_forward(layers: Sequence[torch.nn.Module], every: int = 10) -> list:
    """Hand freed heap memory back to the system after every `every`-th decoder layer runs.

    A forward pass that keeps activations for the backward pass frees its temporaries
    (fp32 norm buffers, rotary and attention scratch) between the kept tensors, and glibc
    keeps those holes resident: on a 1k-token micro-batch of a 135M model about 150 MiB
    at the end of the forward, exactly when memory peaks. Trimming at a few points of the
    forward releases them (a few milliseconds per call). CPU only; no-op without glibc.

    Returns:
        the hook handles (`handle.remove()` undoes it).
    """
    if _malloc_trim() is None:
        return []

    def trim(*_: Any) -> None:
        release_free_memory()

    return [
        layer.register_forward_hook(trim)
        for index, layer in enumerate(layers, start=1)
        if index % every == 0 or index == len(layers)
    ]


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
