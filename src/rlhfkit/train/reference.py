"""The reference model's log-probabilities of preference pairs, computed once per run and
kept in the run directory (DPO reads them at every step instead of running the reference).

The reference is the policy's base with the adapter switched off (no second copy of the
weights), or, for full fine-tuning, the model before its first step. The file is written
block by block, so a run killed while computing them continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from rlhfkit.fileio import atomic_write_json
from rlhfkit.models.policy import PolicyModel
from rlhfkit.progress import progress_bar
from rlhfkit.train.pairs import EncodedPair, pair_batch, pair_outputs

logger = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.json"
BLOCK_PAIRS = 64
"""Pairs computed (over every rank) between two writes of the file."""


def pair_logps(
    policy: PolicyModel, pairs: list[EncodedPair], pad_id: int, multiple: int
) -> torch.Tensor:
    """Summed log-probabilities of each pair's chosen and rejected answer under `policy`
    as it is (with gradients when they are on), in one packed pass over `pairs`.

    Returns:
        fp32 sums, column 0 the chosen and column 1 the rejected answer. Shape: (B, 2)
    """
    batch, _ = pair_batch(pairs, pad_id, multiple)
    logprobs = policy.response_logprobs(batch.to(policy.device))  # (2B, A)
    return logprobs.sum(1).view(len(pairs), 2)


def reference_pass(
    policy: PolicyModel,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int,
) -> torch.Tensor:
    """The summed log-probabilities of each pair's two answers under the reference (the
    adapter off), in micro-batches of similar length (`pairs.pair_outputs`), in the order
    of `pairs`. Shape: (N, 2)"""
    with adapter_off(policy):
        return policy_pair_sums(policy, pairs, pad_id, max_tokens, use_bf16, multiple)


def policy_pair_sums(
    policy: PolicyModel,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int,
) -> torch.Tensor:
    """`pair_logps` of `pairs` under `policy` as it is, without gradients. Shape: (N, 2)"""
    return pair_outputs(
        policy,
        lambda batch: policy.response_logprobs(batch).sum(1),
        pairs,
        pad_id,
        max_tokens,
        use_bf16,
        multiple,
    )


def adapter_off(policy: PolicyModel):
    """The reference: the base with the adapter switched off (a no-op without adapter)."""
    from contextlib import nullcontext

    return policy.backbone.disable_adapter() if policy.has_adapter else nullcontext()


def cache_key(settings: dict) -> str:
    """What the cached values depend on (the data's digest, the base model, the encoding)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cached_reference(
    run_dir: Path,
    key: str,
    splits: dict[str, dict[int, EncodedPair]],
    compute,
    parallel,
) -> dict[str, dict[int, torch.Tensor]]:
    """The reference log-probabilities of the pairs each split names (by their index in
    the split), from the run's file where it has them (same `key`), computed for the rest
    by `compute(pairs)` (N, 2), each rank a share of every block, and written back after
    each block. Returns (chosen, rejected) by index, per split."""
    path = run_dir / REFERENCE_FILE
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if stored.get("key") != key:
        stored = {"key": key}
    todo = {
        name: [i for i in sorted(pairs) if str(i) not in stored.setdefault(name, {})]
        for name, pairs in splits.items()
    }
    missing = sum(len(indices) for indices in todo.values())
    if missing:
        logger.info("reference log-probabilities of %d pairs: computing them once", missing)
    bar = progress_bar(missing, 0, "reference", enabled=parallel.is_main and missing > 0)
    started = time.perf_counter()
    for name, indices in todo.items():
        for start in range(0, len(indices), BLOCK_PAIRS):
            block = indices[start : start + BLOCK_PAIRS]
            mine = parallel.spread(block)
            share = compute([splits[name][i] for i in mine]).tolist() if mine else []
            for index, values in parallel.gather(list(zip(mine, share, strict=True))):
                stored[name][str(index)] = values
            if parallel.is_main:
                atomic_write_json(path, stored)
            bar.update(len(block))
    bar.close()
    if missing:
        logger.info("reference log-probabilities computed in %.0f s", time.perf_counter() - started)
    return {
        name: {i: torch.tensor(stored[name][str(i)]) for i in pairs}
        for name, pairs in splits.items()
    }
