"""Preference pairs as token ids: encoding, batching by length, scoring and their statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.algorithms.reward import bradley_terry_loss
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.models.generate import padded_width
from rlhfkit.models.reward import (
    ResponseBatch,
    RewardModel,
)
from rlhfkit.stats import length_order, pair_accuracy
from rlhfkit.train.common import autocast


@dataclass
class EncodedPair:
    """One preference pair as token ids (responses end with the end-of-sequence token)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float
    length_order: int = 0
    """1 when the chosen answer is longer (in characters), -1 when shorter, 0 when equal."""


def encode_pairs(records: list, encoder: PromptEncoder, use_margin: bool) -> list[EncodedPair]:
    """Encode preference records with one encoder (its truncation counts accumulate)."""
    pairs = []
    for record in records:
        margin = record.margin if (use_margin and record.margin is not None) else 0.0
        pairs.append(
            EncodedPair(
                prompt=encoder.encode_prompt(record.messages).ids,
                chosen=encoder.encode_response(record.chosen).ids,
                rejected=encoder.encode_response(record.rejected).ids,
                margin=float(margin),
                length_order=length_order(record.chosen, record.rejected),
            )
        )
    return pairs


def pair_batch(
    pairs: list[EncodedPair], pad_id: int, multiple: int = 1
) -> tuple[ResponseBatch, torch.Tensor]:
    """Rows 2i and 2i+1 are the chosen and rejected answer of pair i; margins (B,)."""
    responses = [ids for p in pairs for ids in (p.chosen, p.rejected)]
    batch = ResponseBatch.build([p.prompt for p in pairs], responses, pad_id, multiple)
    return batch, torch.tensor([p.margin for p in pairs], dtype=torch.float32)


def padded_tokens(pairs: list[EncodedPair], multiple: int = 1) -> int:
    """Tokens a micro-batch of `pairs` occupies once padded (prompt + two answers per pair)."""
    prompt = padded_width([len(p.prompt) for p in pairs], multiple)
    answer = padded_width([len(ids) for p in pairs for ids in (p.chosen, p.rejected)], multiple)
    return len(pairs) * (prompt + 2 * answer)


def micro_batches(
    pairs: list[EncodedPair], max_tokens: int, multiple: int = 1
) -> list[list[EncodedPair]]:
    """Split a batch into micro-batches of similar length, each within `max_tokens` padded
    tokens (a pair longer than that goes alone)."""
    ordered = sorted(pairs, key=lambda p: (len(p.prompt), max(len(p.chosen), len(p.rejected))))
    chunks: list[list[EncodedPair]] = []
    for pair in ordered:
        if chunks and padded_tokens([*chunks[-1], pair], multiple) <= max_tokens:
            chunks[-1].append(pair)
        else:
            chunks.append([pair])
    return chunks


def score_pairs(
    model: RewardModel,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int = 1,
) -> torch.Tensor:
    """Rewards of every pair's chosen and rejected answer, in the order of `pairs`.

    Returns:
        fp32 rewards, column 0 the chosen and column 1 the rejected answer. Shape: (N, 2)
    """
    return pair_outputs(model, model, pairs, pad_id, max_tokens, use_bf16, multiple)


@torch.no_grad()
def pair_outputs(
    model: RewardModel,
    function,
    pairs: list[EncodedPair],
    pad_id: int,
    max_tokens: int,
    use_bf16: bool,
    multiple: int,
) -> torch.Tensor:
    """`function(batch)` of every pair's two answers (one row each), in the order of
    `pairs`, run in micro-batches of similar length with `model` in eval mode: rewards
    with `model` itself, the head's features with `model.features`.

    Returns:
        fp32 outputs. Shape: (N, 2, ...)
    """
    was_training = model.training
    model.eval()
    position = {id(pair): index for index, pair in enumerate(pairs)}
    out: torch.Tensor | None = None
    for chunk in micro_batches(pairs, max_tokens, multiple):
        batch, _ = pair_batch(chunk, pad_id, multiple)
        with autocast(model.device, use_bf16):
            values = function(batch.to(model.device)).float().cpu()  # (2 * len(chunk), ...)
        values = values.view(len(chunk), 2, *values.shape[1:])
        if out is None:
            out = torch.zeros(len(pairs), *values.shape[1:])
        out[torch.tensor([position[id(pair)] for pair in chunk])] = values
    model.train(was_training)
    return out if out is not None else torch.zeros(0, 2)


def pair_statistics(rewards: torch.Tensor, pairs: list[EncodedPair], prefix: str) -> dict:
    """Rank loss, margin and accuracy (with its interval, ties, the split by length and the
    prefer-longer rule) of `rewards` (N, 2) on `pairs`, keys named `{prefix}/...`."""
    margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    loss = bradley_terry_loss(rewards[:, 0], rewards[:, 1], margins)
    diffs = (rewards[:, 0] - rewards[:, 1]).tolist()
    accuracy = pair_accuracy(diffs, [p.length_order for p in pairs])
    return {
        f"{prefix}/rank_loss": loss.rank_loss.item(),
        f"{prefix}/margin": loss.margin.item(),
        **{f"{prefix}/{key}": value for key, value in accuracy.items()},
    }
