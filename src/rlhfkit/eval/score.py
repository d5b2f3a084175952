"""`rlhfkit score`: a reward per response with a trained reward model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.data.formats import Dataset, load_dataset
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import PreferenceRecord
from rlhfkit.errors import DatasetError
from rlhfkit.eval.stats import length_order, pair_accuracy
from rlhfkit.fileio import atomic_write_jsonl
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.reward import ResponseBatch, RewardModel, load_reward_model


@dataclass
class ScoreResult:
    rows: list[dict[str, Any]]
    pairwise_accuracy: dict[str, float | int] | None
    """For a preference file: `eval.stats.pair_accuracy` of the rewards (ties count half)."""
    dataset: Dataset | None = None
    """The scored dataset (its `dropped` rows were left out by bad_rows=skip)."""


def encoder_for(model: RewardModel, tokenizer) -> PromptEncoder:
    """A prompt encoder with the instruction and lengths the reward model was trained with."""
    return PromptEncoder.from_settings(tokenizer, model.spec)


@torch.no_grad()
def score_texts(
    model: RewardModel,
    encoder: PromptEncoder,
    prompts: list[tuple],
    responses: list[list[str]],
    batch_size: int = 16,
    ended: list[list[bool]] | None = None,
) -> list[list[float]]:
    """Rewards of k responses per prompt. `prompts` are message tuples; returns (B, k) lists.

    `ended[b][j]` False marks an answer that was cut off (it gets no end-of-sequence token).
    """
    # bf16 autocast when the base weights are bf16 (fp32 weights are scored in fp32)
    autocast = next(model.backbone.parameters()).dtype == torch.bfloat16
    pad_id = encoder.tokenizer.pad_token_id
    out: list[list[float]] = []
    for start in range(0, len(prompts), batch_size):
        chunk_prompts = prompts[start : start + batch_size]
        chunk_responses = responses[start : start + batch_size]
        prompt_ids = [encoder.encode_prompt(p).ids for p in chunk_prompts]
        chunk_ended = ended[start : start + batch_size] if ended else None
        response_ids = [
            # an empty answer cut off before any text is scored as the bare end token
            encoder.encode_response(r, add_eos=chunk_ended[b][j] if chunk_ended else True).ids
            or [encoder.tokenizer.eos_token_id]
            for b, group in enumerate(chunk_responses)
            for j, r in enumerate(group)
        ]
        batch = ResponseBatch.build(prompt_ids, response_ids, pad_id).to(model.device)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast):
            rewards = model(batch).float().cpu().view(len(chunk_prompts), -1)
        out.extend(rewards.tolist())
    return out


def score_file(
    reward_model: str | Path,
    data: str | Path,
    response_field: str = "prediction",
    bad_rows: str = "error",
) -> ScoreResult:
    """Score a preference file (both candidates) or a prompt file with a response column;
    with `bad_rows="skip"`, invalid rows are left out (`ScoreResult.dataset.dropped`)."""
    dataset = load_dataset(data, bad_rows=bad_rows)
    model = load_reward_model(reward_model)
    tokenizer = load_tokenizer(model.spec.base_model)
    encoder = encoder_for(model, tokenizer)
    records = dataset.records
    if dataset.kind == "preference":
        groups = [list(r.candidates) for r in records]
    else:
        missing = [
            str(r.source) for r in records if not isinstance(r.extra.get(response_field), str)
        ]
        if missing:
            raise DatasetError(
                f"{data}: {len(missing)} prompt row(s) have no string field {response_field!r} "
                "to score; add it or pass --response-field NAME",
                [f"{where}: field {response_field!r} missing or not a string" for where in missing],
            )
        groups = [[r.extra[response_field]] for r in records]
    rewards = score_texts(model, encoder, [r.messages for r in records], groups)
    rows: list[dict[str, Any]] = []
    diffs: list[float] = []
    orders: list[int] = []
    for record, group, reward in zip(records, groups, rewards, strict=True):
        row: dict[str, Any] = {"source": str(record.source), "prompt": record.text}
        if isinstance(record, PreferenceRecord):
            row.update(
                candidate_0=group[0],
                candidate_1=group[1],
                choice=record.choice,
                reward_0=reward[0],
                reward_1=reward[1],
            )
            chosen, rejected = reward[record.choice], reward[1 - record.choice]
            diffs.append(chosen - rejected)
            orders.append(length_order(group[record.choice], group[1 - record.choice]))
        else:
            row.update(response=group[0], reward=reward[0])
        rows.append(row)
    accuracy = pair_accuracy(diffs, orders) if dataset.kind == "preference" else None
    return ScoreResult(rows, accuracy, dataset)


def write_scores(result: ScoreResult, out: str | Path) -> None:
    atomic_write_jsonl(out, result.rows)
