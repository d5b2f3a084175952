"""The pairs people judge: a prompt and two answers, A and B, wherever they came from.

A is `candidate_0` of a pairs file, or the first model (a run's base model); B is
`candidate_1`, or the second model (a run's tuned model). The page shows A and B on sides
drawn at random for each item and labeller (see `rlhfkit.label.store`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.records import Message
from rlhfkit.errors import ConfigError

FILE_CHOICE = "file_choice"
"""Item field: the label the pairs file already had (A: candidate_0 / chosen, B), when any."""


@dataclass(frozen=True)
class LabelItem:
    """One pair to judge.

    Attributes:
        messages: the prompt conversation.
        answer_a, answer_b: the two answers.
        name_a, name_b: what A and B are (`candidate_0`, or a prediction file).
        source: `file:line` of the row the pair came from.
        extra: the row's other fields, written out again on export.
        chat: whether the prompt came as a conversation.
    """

    messages: tuple[Message, ...]
    answer_a: str
    answer_b: str
    name_a: str
    name_b: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)
    chat: bool = False

    @property
    def id(self) -> str:
        """A stable id from the prompt and the answers: the same pair gets the same id."""
        content = [[[m.role, m.content] for m in self.messages], self.answer_a, self.answer_b]
        digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()[:16]


def items_from_pairs(path: str | Path) -> tuple[list[LabelItem], list[str]]:
    """The pairs of a preference-style file (rlhf rows may lack `choice`), in file order;
    a pair that came labelled keeps its label as `extra["file_choice"]` (A or B).

    Returns:
        The items and the dataset's warnings (rows that are valid but suspicious).
    """
    from rlhfkit.data.formats import is_unjudged_pair, load_pairs

    dataset = load_pairs(path)
    items = []
    for record, row in zip(dataset.records, dataset.rows, strict=True):
        answer_a, answer_b = record.candidates
        extra = dict(record.extra)
        if not is_unjudged_pair(row):  # the file's own label, for agreement (`label stats`)
            extra[FILE_CHOICE] = "AB"[record.choice]
        items.append(
            LabelItem(
                record.messages,
                answer_a,
                answer_b,
                "candidate_0",
                "candidate_1",
                str(record.source),
                extra,
                record.chat,
            )
        )
    return items, list(dataset.warnings)


def items_from_predictions(
    file_a: str | Path,
    file_b: str | Path,
    column_a: str = "prediction",
    column_b: str = "prediction",
) -> list[LabelItem]:
    """Pairs from two prediction files over the same prompts (as `rlhfkit sxs` pairs them)."""
    from rlhfkit.eval.sxs import pair_predictions

    items = []
    for pair in pair_predictions(Path(file_a), Path(file_b), column_a, column_b):
        record = pair.record
        extra = {k: v for k, v in record.extra.items() if k != column_a}
        items.append(
            LabelItem(
                record.messages,
                pair.response_a,
                pair.response_b,
                str(file_a),
                str(file_b),
                str(record.source),
                extra,
                record.chat,
            )
        )
    return items


def items_from_run(run_dir: str | Path) -> list[LabelItem]:
    """A pipeline run's base (A) and tuned (B) answers to its eval prompts."""
    folder = Path(run_dir)
    base, tuned = folder / "infer" / "base.jsonl", folder / "infer" / "tuned.jsonl"
    if not folder.is_dir():
        raise ConfigError(f"run={run_dir}: no such folder")
    missing = [str(p) for p in (base, tuned) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"run={run_dir} has no {' or '.join(missing)}: run the pipeline through its infer "
            "stage first (rlhfkit run ...), or give the answers as a=FILE b=FILE"
        )
    return items_from_predictions(base, tuned)


def unique_items(items: list[LabelItem]) -> tuple[list[LabelItem], list[str]]:
    """The items without repeats of the same pair, and a note for each repeat left out."""
    first: dict[str, LabelItem] = {}
    notes = []
    for item in items:
        seen = first.setdefault(item.id, item)
        if seen is not item:
            notes.append(f"{item.source}: the same pair as {seen.source}; it is judged once")
    return list(first.values()), notes
