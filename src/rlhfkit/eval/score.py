"""`rlhfkit score`: a reward per response with a trained reward model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data.formats import Dataset, load_dataset
from rlhfkit.data.records import PreferenceRecord
from rlhfkit.errors import DatasetError
from rlhfkit.fileio import atomic_write_jsonl
from rlhfkit.models.scoring import RewardTextScorer
from rlhfkit.stats import length_order, pair_accuracy


@dataclass
class ScoreResult:
    rows: list[dict[str, Any]]
    pairwise_accuracy: dict[str, float | int] | None
    """For a preference file: `stats.pair_accuracy` of the rewards (ties count half)."""
    dataset: Dataset | None = None
    """The scored dataset (its `dropped` rows were left out by bad_rows=skip)."""


def score_file(
    reward_model: str | Path,
    data: str | Path,
    response_field: str = "prediction",
    bad_rows: str = "error",
) -> ScoreResult:
    """Score a preference file (both candidates) or a prompt file with a response column;
    with `bad_rows="skip"`, invalid rows are left out (`ScoreResult.dataset.dropped`)."""
    dataset = load_dataset(data, bad_rows=bad_rows)
    scorer = RewardTextScorer.load(reward_model)
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
    rewards = scorer.score([r.messages for r in records], groups)
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
