"""Step helpers every trainer shares: which examples a step takes, held-out splits, bf16
autocast, the cadence of logging and evaluation, micro-batch counts."""

from __future__ import annotations

from typing import TypeVar

import torch

from rlhfkit import seeding

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


def prepare_decoder_blocks(
    model: torch.nn.Module, setting: bool | None, device: torch.device, sharding: str, steps: int
) -> bool:
    """Ready the decoder blocks of `model` for a training run: heap trims during passes with
    gradients on CPU, and compiled when the run's `compile` (`setting`) says so. Returns
    whether they were compiled."""
    import logging

    from rlhfkit.models.compiled import compile_blocks, resolve_compile
    from rlhfkit.models.loading import decoder_blocks
    from rlhfkit.train.memory import trim_heap_during_forward

    blocks = decoder_blocks(model)
    if device.type == "cpu":
        trim_heap_during_forward(blocks)  # lowers the memory peak at no cost in speed
    compiled = resolve_compile(setting, device, sharding, steps)
    if compiled:
        compile_blocks(blocks)
        logging.getLogger(__name__).info(
            "decoder blocks compiled for training: the first step includes compiling"
        )
    return compiled
