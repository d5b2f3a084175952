"""Every random stream of a run, by name, each derived from the run's `seed` in one place.

A stream's numbers depend only on the seed and the stream's own position (an epoch, a
step, a row), never on what ran before, so a resumed run draws what an unbroken one draws.
Streams drawn through a `torch.Generator` are separate objects; those that seed torch's
global generator (`seed_global`) do so right before the draws they govern.

    stream             derived seed                             governs
    init               seed                                     new weights, the run start
    data_order         seed * 100_003 + epoch                   which examples a step takes
    held_out_split     seed                                     held-out rows of a dataset
    validation_split   seed + 1                                 train-reward's validation pairs
    update_shuffle     seed * 1_000_003 + step                  an RL update's mini-batch order
    rank_sampling      seed * 1_000_003 + step * 7919 + rank    sampling on ranks other than 0
    evaluation         seed + 7                                 sampled held-out answers in RL
    infer_batch        seed + first row of the batch            `rlhfkit infer`'s sampled answers
    synth_candidate    seed + candidate index                   `data synth`'s two answers
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (one of the derived seeds below)."""
    return torch.Generator().manual_seed(seed)


def seed_global(seed: int) -> None:
    """Seed torch's global generator (the draws of sampling and initialisation)."""
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Draws inside seeded with `seed` (None: left as they are), and the global random state
    of the CPU and of `device` when it is a GPU put back afterwards, so the draws outside go
    on as if the block had not run."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            seed_global(seed)
        yield


def data_order(seed: int, epoch: int) -> torch.Generator:
    return generator(seed * 100_003 + epoch)


def held_out_split(seed: int) -> torch.Generator:
    return generator(seed)


def validation_split(seed: int) -> int:
    return seed + 1


def update_shuffle(seed: int, step: int) -> torch.Generator:
    return generator(seed * 1_000_003 + step)


def rank_sampling(seed: int, step: int, rank: int) -> int:
    return seed * 1_000_003 + step * 7919 + rank


def evaluation(seed: int) -> int:
    return seed + 7


def infer_batch(seed: int, first_row: int) -> int:
    return seed + first_row


def synth_candidate(seed: int, index: int) -> int:
    return seed + index


def init(seed: int) -> int:
    return seed
