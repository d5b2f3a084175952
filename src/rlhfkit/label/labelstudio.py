"""Label Studio in and out: pairs as its tasks, its JSON export back as judgments.

`write_tasks` writes the pairs (pairs=, run= or a= b=, as `label serve` reads them) as a
Label Studio task file and the labelling configuration beside it: Label Studio's pairwise
preference layout (the prompt as a dialogue, a `Pairwise` tag over the two answers) and,
with `strength=true`, a single-choice `strength` tag (slightly, clearly, much). The items
go into the label store as well; each task carries its item's id and which answer, A or B,
it shows first (`answer1`, the left one): drawn per item from the store's salt, since Label
Studio shows every labeller the same sides.

`import_export` reads Label Studio's JSON export (the full `JSON` export or `JSON_MIN`) and
stores each annotation as a judgment of its annotator: the pairwise `selected` left/right
turned back into A or B, the strength when given, the annotation's lead time as seconds; a
cancelled (skipped) annotation as a skip. `rlhfkit label export` and `label stats` then
work on those judgments exactly as on the page's. Importing the same export again changes
nothing; a changed annotation replaces the earlier judgment and counts a revision.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from rlhfkit.config import check, param
from rlhfkit.errors import DatasetError, RlhfkitError
from rlhfkit.fileio import atomic_write_json, atomic_write_text, check_output_path, file_error
from rlhfkit.label.items import LabelItem
from rlhfkit.label.serve_config import PairSource
from rlhfkit.label.store import STRENGTHS, LabelStore

ITEM_FIELD = "rlhfkit_item"
LEFT_FIELD = "rlhfkit_left"
"""Task data fields: the item's id in the label store, and which answer (A or B) is answer1."""
SIDES_LABELLER = "labelstudio"
"""The name the sides are drawn for (`LabelStore.left_side`): one draw per item."""
SELECTED = {"left": "left", "right": "right"}
"""Label Studio's pairwise `selected` values; the first answer (answer1) is `left`."""


@dataclass
class LabelStudioTasksConfig(PairSource):
    """Parameters of `rlhfkit label to-labelstudio`."""

    out: str = param("", "Label Studio task file to write (.json); its config beside (.xml).")
    strength: bool = param(
        False, "Also ask how much better (slightly, clearly, much): a `strength` choice."
    )

    def validate(self) -> None:
        check(len(self.sources()) == 1, "pairs", None, "give one of pairs=, run= or a= b=")
        check(self.out.endswith(".json"), "out", self.out, "is required, a .json file")

    @property
    def config_path(self) -> Path:
        return Path(self.out).with_suffix(".xml")


@dataclass
class TasksResult:
    tasks: int
    added: int
    out: Path
    config: Path
    notes: list[str]


def labelling_config(strength: bool) -> str:
    """Label Studio's labelling configuration (XML) for the tasks `write_tasks` writes."""
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Header", value="The conversation so far")
    ElementTree.SubElement(view, "Paragraphs", name="prompt", value="$prompt", layout="dialogue")
    ElementTree.SubElement(view, "Header", value="Which answer is better? Click it.")
    ElementTree.SubElement(view, "Pairwise", name="comparison", toName="answer1,answer2")
    ElementTree.SubElement(view, "Text", name="answer1", value="$answer1")
    ElementTree.SubElement(view, "Text", name="answer2", value="$answer2")
    if strength:
        ElementTree.SubElement(view, "Header", value="How much better is it?")
        choices = ElementTree.SubElement(
            view, "Choices", name="strength", toName="prompt", choice="single", showInline="true"
        )
        for value in STRENGTHS:
            ElementTree.SubElement(choices, "Choice", value=value)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def task_of(item: LabelItem, left: str) -> dict[str, Any]:
    """One Label Studio task: the prompt as dialogue turns, the answers in the drawn order."""
    first, second = item.answer_a, item.answer_b
    if left == "B":
        first, second = second, first
    return {
        "data": {
            "prompt": [{"author": m.role, "text": m.content} for m in item.messages],
            "answer1": first,
            "answer2": second,
            ITEM_FIELD: item.id,
            LEFT_FIELD: left,
        }
    }


def write_tasks(config: LabelStudioTasksConfig) -> TasksResult:
    """Add the pairs to the label store and write them as Label Studio tasks and config."""
    from rlhfkit.label.server import open_store

    check_output_path(config.out)
    opened = open_store(config)
    store = opened.store
    tasks = [task_of(item, store.left_side(item.id, SIDES_LABELLER)) for item in store.items()]
    atomic_write_text(config.config_path, labelling_config(config.strength))
    atomic_write_json(config.out, tasks)
    return TasksResult(len(tasks), opened.added, Path(config.out), config.config_path, opened.notes)


@dataclass
class LabelStudioImportConfig:
    """Parameters of `rlhfkit label from-labelstudio EXPORT.json`."""

    db: str = param("labels.db", "The label store `to-labelstudio` wrote the items into.")

    def validate(self) -> None:
        check(bool(self.db), "db", self.db, "is required (db=labels.db)")


@dataclass
class Annotation:
    """One annotation of an export, read: where it is, who, and what they chose."""

    where: str
    item_id: str
    left: str
    labeller: str
    shown: str | None
    """left, right or skip (a cancelled annotation); None: no answer was chosen."""
    strength: str | None
    seconds: float | None


@dataclass
class ImportResult:
    counts: Counter
    labellers: Counter


def import_export(path: str | Path, config: LabelStudioImportConfig) -> ImportResult:
    """Store the annotations of a Label Studio JSON export as judgments in `config.db`."""
    path = Path(path)
    store = LabelStore(config.db)
    tasks = _read_export(path)
    known = {item.id for item in store.items()}
    annotations: list[Annotation] = []
    problems: list[str] = []
    for index, task in enumerate(tasks):
        where = f"{path}: task {index + 1} (id {task.get('id')})"
        try:
            read = _annotations(task, where)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        item = task.get("data", task)[ITEM_FIELD]
        if item not in known:
            problems.append(
                f"{where}: item {item} is not in {config.db}; import into the label store "
                "that `rlhfkit label to-labelstudio` wrote these tasks with"
            )
        annotations += read
    if problems:
        raise DatasetError(
            f"{len(problems)} problem(s) in the Label Studio export {path}; nothing was imported",
            problems,
        )
    before = {(j.item_id, j.labeller): j for j in store.judgments()}
    counts: Counter = Counter()
    labellers: Counter = Counter()
    for annotation in annotations:
        if annotation.shown is None:
            counts["without a choice"] += 1
            continue
        old = before.get((annotation.item_id, annotation.labeller))
        if old is not None and _same(old, annotation):
            counts["unchanged"] += 1
            continue
        judgment, _ = store.save(
            annotation.item_id,
            annotation.labeller,
            annotation.shown,
            seconds=annotation.seconds,
            strength=annotation.strength,
            left_side=annotation.left,
        )
        counts["replaced" if old is not None else "new"] += 1
        counts["skips" if judgment.choice == "SKIP" else "votes"] += 1
        labellers[annotation.labeller] += 1
    return ImportResult(counts, labellers)


def _same(old, annotation: Annotation) -> bool:
    from rlhfkit.label.store import stored_choice

    choice = stored_choice(annotation.shown, annotation.left)
    return old.choice == choice and old.strength == annotation.strength


def _read_export(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RlhfkitError(f"cannot read {path}: {file_error(exc)}") from None
    try:
        tasks = json.loads(text)
    except ValueError as exc:
        raise RlhfkitError(
            f"{path}:{getattr(exc, 'lineno', '?')}: not JSON ({getattr(exc, 'msg', exc)}); "
            "give the file of Label Studio's Export > JSON (or JSON-MIN)"
        ) from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise RlhfkitError(
            f"{path}: a Label Studio export is a JSON list of tasks (objects); this is a "
            f"{type(tasks).__name__}. Use Export > JSON (or JSON-MIN) in Label Studio"
        )
    return tasks


def _annotations(task: dict[str, Any], where: str) -> list[Annotation]:
    """The annotations of one exported task: full JSON (`data`, `annotations`) or JSON_MIN
    (one flat record per annotation)."""
    minimal = "annotations" not in task
    data = task if minimal else task.get("data")
    if not isinstance(data, dict) or not isinstance(data.get(ITEM_FIELD), str):
        raise ValueError(
            f"{where}: no data.{ITEM_FIELD}; import tasks made by "
            "`rlhfkit label to-labelstudio` (their data carries the pair's id)"
        )
    left = data.get(LEFT_FIELD)
    if left not in ("A", "B"):
        raise ValueError(f"{where}: data.{LEFT_FIELD} must be A or B, not {left!r}")
    if minimal:
        return [_minimal_annotation(task, where, data[ITEM_FIELD], left)]
    annotations = task["annotations"]
    if not isinstance(annotations, list):
        raise ValueError(f"{where}: annotations must be a list")
    return [
        _full_annotation(a, f"{where}, annotation {a.get('id', n + 1)}", data[ITEM_FIELD], left)
        for n, a in enumerate(annotations)
        if isinstance(a, dict)
    ]


def _full_annotation(annotation: dict[str, Any], where: str, item: str, left: str) -> Annotation:
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise ValueError(f"{where}: result must be a list")
    shown = strength = None
    for result in results:
        value = result.get("value") if isinstance(result, dict) else None
        if not isinstance(value, dict):
            continue
        if result.get("type") == "pairwise":
            shown = _selected(value.get("selected"), where)
        elif result.get("from_name") == "strength":
            strength = _strength(value.get("choices"), where)
    if annotation.get("was_cancelled"):
        shown, strength = "skip", None
    return Annotation(
        where,
        item,
        left,
        _labeller(annotation.get("completed_by"), where),
        shown,
        strength if shown in ("left", "right") else None,
        _seconds(annotation.get("lead_time")),
    )


def _minimal_annotation(record: dict[str, Any], where: str, item: str, left: str) -> Annotation:
    shown = strength = None
    comparison = record.get("comparison")
    if isinstance(comparison, list) and comparison and isinstance(comparison[0], dict):
        shown = _selected(comparison[0].get("selected"), where)
    elif isinstance(comparison, dict):
        shown = _selected(comparison.get("selected"), where)
    if "strength" in record:
        strength = _strength(record["strength"], where)
    return Annotation(
        where,
        item,
        left,
        _labeller(record.get("annotator"), where),
        shown,
        strength if shown else None,
        _seconds(record.get("lead_time")),
    )


def _selected(value: Any, where: str) -> str | None:
    if value in (None, "none"):
        return None
    if value not in SELECTED:
        raise ValueError(f"{where}: pairwise selected is {value!r}; Label Studio writes left/right")
    return SELECTED[value]


def _strength(value: Any, where: str) -> str | None:
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError(f"{where}: several strengths {value}; the tag takes one choice")
        value = value[0] if value else None
    if value is None:
        return None
    if value not in STRENGTHS:
        raise ValueError(f"{where}: strength {value!r} is not one of {', '.join(STRENGTHS)}")
    return value


def _labeller(who: Any, where: str) -> str:
    """The annotator: an email when the export names them, else Label Studio's user id."""
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if isinstance(who, bool) or who is None or who == "":
        raise ValueError(f"{where}: no annotator (completed_by/annotator)")
    return f"labelstudio-user-{who}" if isinstance(who, int) else str(who)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
