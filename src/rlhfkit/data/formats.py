"""Detect a dataset's format from its keys, validate every row and normalise to records.

A format is a set of keys (TRL's convention). Preference formats:

- `rlhf_text`: `input_text`, `candidate_0`, `candidate_1`, `choice` (0 or 1).
- `rlhf_chat`: `messages` [{author: user|assistant, content}] alternating and ending with a
  user turn, optional `context` (a leading system message), the candidates and `choice`.
- `trl`: `prompt`, `chosen`, `rejected`, all strings or all conversations
  ([{role, content}]; chosen and rejected hold one assistant message each).
- `trl_implicit`: `chosen` and `rejected` only; the prompt is their shared start.
- `hh`: `chosen` and `rejected` as Anthropic HH transcripts ("\\n\\nHuman: ..." and
  "\\n\\nAssistant: ..." turns); the prompt is every turn before the final Assistant turn.
- `openai_dpo`: OpenAI's preference fine-tuning rows: `input` {`messages` [{role, content}]
  ending with a user turn}, `preferred_output` and `non_preferred_output` (one assistant
  message each). A content may be a string or a list of text parts. `input`'s other keys
  (`tools`, `parallel_tool_calls`) and a message's keys other than role and content are
  ignored; other top-level keys (`metadata`, ...) are kept like any format's.

Any preference row may carry a numeric `margin`. Prompt formats: `rlhf_text` (`input_text`),
`rlhf_chat` (`messages` with `author`, optional `context`), `trl` (`prompt`, a string or a
conversation) and `openai_rft` (`messages` with `role`, ending with a user turn; contents as
in `openai_dpo`). Every field that is not the format's own is kept in the record's `extra`.

Every problem names `file:line`, the field and the reason; all problems of a dataset are
collected and raised together as one `DatasetError`, or, with `bad_rows="skip"`, the rows
that have them are left out and kept in `Dataset.dropped` (never silently: every command
that skips rows counts them by reason and lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.reader import RowScan, not_an_object, scan_rows, sort_issues
from rlhfkit.data.records import PreferenceRecord, PromptRecord, Source
from rlhfkit.data.row_parsers import CANDIDATE_KEYS, RECORD_PARSERS, RowCheck
from rlhfkit.errors import DatasetError, RlhfkitError
from rlhfkit.fileio import atomic_write_jsonl

KINDS = ("preference", "prompt")
BAD_ROWS = ("error", "skip")
"""What to do with invalid rows: stop with every problem listed, or leave those rows out."""

FORMAT_KEYS: dict[str, dict[str, str]] = {
    "preference": {
        "rlhf_text": "input_text, candidate_0, candidate_1, choice",
        "rlhf_chat": "messages [{author, content}], candidate_0, candidate_1, choice, "
        "optional context",
        "trl": "prompt, chosen, rejected",
        "trl_implicit": "chosen, rejected sharing the prompt at their start",
        "hh": "chosen, rejected as '\\n\\nHuman: ...\\n\\nAssistant: ...' transcripts",
        "openai_dpo": "input {messages [{role, content}]}, preferred_output, non_preferred_output",
    },
    "prompt": {
        "rlhf_text": "input_text",
        "rlhf_chat": "messages [{author, content}], optional context",
        "trl": "prompt",
        "openai_rft": "messages [{role, content}]",
    },
}
"""For each kind, every format and the keys that make it (shown in error messages).

The formats are those of `rlhfkit.data.records.PREFERENCE_FORMATS` and `PROMPT_FORMATS`.
"""


@dataclass
class Dataset:
    """A validated dataset.

    Attributes:
        kind: "preference" or "prompt".
        format: the format every row uses (one of `PREFERENCE_FORMATS` or `PROMPT_FORMATS`).
        records: `PreferenceRecord`s for a preference dataset, `PromptRecord`s for a prompt
            dataset, in file then line order.
        files: the files read (for in-memory rows, the name given).
        warnings: rows that are valid but suspicious, each starting with `file:line`.
        rows: the input rows, every field as in the file, in record order (for writing
            them out again with something added, as inference and the pipeline do).
        dropped: with `bad_rows="skip"`, every problem of the rows left out, as (source,
            message), in file then line order; empty otherwise.
        content_digest: sha256 of the bytes the rows were read from (not of the file names).
    """

    kind: str
    format: str
    records: list[PreferenceRecord] | list[PromptRecord]
    files: list[str]
    warnings: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[Source, str]] = field(default_factory=list)
    content_digest: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def dropped_sources(self) -> list[Source]:
        """The rows left out, each once, in file then line order."""
        return list(dict.fromkeys(source for source, _ in self.dropped))

    @property
    def dropped_rows(self) -> int:
        """How many rows were left out."""
        return len(self.dropped_sources)

    def dropped_reasons(self) -> dict[str, int]:
        """Rows left out per reason (a row with two problems counts under both), most first."""
        rows: dict[str, set[Source]] = {}
        for source, message in self.dropped:
            rows.setdefault(problem_reason(source, message), set()).add(source)
        counts = {reason: len(sources) for reason, sources in rows.items()}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def dropped_note(self, name: str, listed_in: str | Path | None = None) -> str | None:
        """One line on the rows left out of `name` (None when none were): how many, why,
        where the first are, and where the whole list is."""
        if not self.dropped:
            return None
        reasons = "; ".join(f"{n} x {reason}" for reason, n in self.dropped_reasons().items())
        sources = self.dropped_sources
        shown = ", ".join(str(source) for source in sources[:3])
        more = f" and {len(sources) - 3} more" if len(sources) > 3 else ""
        listed = f"; all listed in {listed_in}" if listed_in else ""
        return (
            f"{name}: left out {len(sources)} bad row(s) of {len(sources) + len(self)} "
            f"(bad_rows=skip): {reasons} (at {shown}{more}){listed}"
        )


DROPPED_ROWS_FILE = "dropped_rows.jsonl"
"""Where a run directory lists the rows `bad_rows=skip` left out: one {dataset, file, line,
problem} object per problem."""


def record_dropped(datasets: dict[str, Dataset], path: str | Path) -> list[str]:
    """List the rows left out of `datasets` (by name) in the JSON-lines file `path`, written
    atomically, and return one line per dataset that lost rows (none: [], no file)."""
    lossy = {name: dataset for name, dataset in datasets.items() if dataset.dropped}
    if not lossy:
        return []
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(
        path,
        (
            {"dataset": name, "file": source.file, "line": source.line, "problem": message}
            for name, dataset in lossy.items()
            for source, message in dataset.dropped
        ),
    )
    return [str(dataset.dropped_note(name, path)) for name, dataset in lossy.items()]


def dropped_rows_path(out: str | Path) -> Path:
    """Where the rows left out of an output file's input are listed: beside it, e.g.
    base.dropped_rows.jsonl for base.jsonl."""
    out = Path(out)
    stem = out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return out.parent / f"{stem}.dropped_rows.jsonl"


def problem_reason(source: Source, message: str) -> str:
    """A problem without its `file:line` and the value found: what rows have in common."""
    reason = message.removeprefix(f"{source}: ")
    return reason.split(", found ")[0]


def check_bad_rows(value: str) -> str:
    """`value` when it is one of `BAD_ROWS`, else an error naming the choices."""
    if value not in BAD_ROWS:
        raise RlhfkitError(f"bad_rows={value!r}: choose one of {', '.join(BAD_ROWS)}")
    return value


def load_dataset(path: str | Path, kind: str | None = None, bad_rows: str = "error") -> Dataset:
    """Read, detect, validate and normalise a dataset.

    Args:
        path: a `.jsonl`, `.jsonl.gz` or `.json` file, a folder or a glob pattern (see
            `rlhfkit.data.reader.find_files`).
        kind: "preference", "prompt", or None to detect it from the first row whose format
            is known (preference formats win when a row has their keys).
        bad_rows: "error" stops at invalid rows; "skip" leaves them out and keeps their
            problems in `Dataset.dropped`.

    Returns:
        The dataset; `warnings` lists rows that are valid but suspicious.

    Raises:
        DatasetError: the path names no dataset, a file cannot be read, the dataset has no
            (valid) rows, or some rows are invalid and `bad_rows` is "error"; the error
            lists every problem with its `file:line`.
        RlhfkitError: `kind` or `bad_rows` is not one of the choices.
    """
    _check_kind(kind)
    check_bad_rows(bad_rows)
    return _build_dataset(str(path), scan_rows(path), kind, bad_rows)


def load_preferences(path: str | Path, bad_rows: str = "error") -> Dataset:
    """`load_dataset(path, "preference", bad_rows)`: records are `PreferenceRecord`s."""
    return load_dataset(path, "preference", bad_rows)


def load_prompts(path: str | Path, bad_rows: str = "error") -> Dataset:
    """`load_dataset(path, "prompt", bad_rows)`: records are `PromptRecord`s."""
    return load_dataset(path, "prompt", bad_rows)


def load_pairs(path: str | Path) -> Dataset:
    """A preference dataset whose rlhf_pipeline rows may lack `choice`: pairs to be judged.

    A row with `candidate_0` and `candidate_1` but no `choice` is read as if `choice` were 0,
    so `record.candidates` is the pair in file order. Every other row is validated as by
    `load_preferences`. `dataset.rows` are the rows as in the file (`is_unjudged_pair`
    tells which had no choice).
    """
    scan = scan_rows(path)
    as_read = {str(source): row for source, row in scan.rows}
    scan.rows = [
        (source, {**row, "choice": 0} if is_unjudged_pair(row) else row)
        for source, row in scan.rows
    ]
    dataset = _build_dataset(str(path), scan, "preference")
    dataset.rows = [as_read[str(record.source)] for record in dataset.records]
    return dataset


def is_unjudged_pair(row: dict[str, Any]) -> bool:
    """An rlhf_pipeline row with both candidates and no `choice` (a pair still to judge)."""
    return "candidate_0" in row and "candidate_1" in row and "choice" not in row


def dataset_from_rows(rows: list[Any], kind: str | None, name: str = "<rows>") -> Dataset:
    """Validate and normalise in-memory rows exactly as `load_dataset` does for a file.

    Args:
        rows: the rows, each a dict.
        kind: "preference", "prompt", or None to detect it.
        name: what `Source.file` and error messages call the rows (row i is at line i + 1).

    Returns:
        The dataset, with `files == [name]`.

    Raises:
        DatasetError: no rows, or some rows are invalid.
        RlhfkitError: `kind` is not one of the choices.
    """
    _check_kind(kind)
    scan = RowScan(files=[name])
    for index, row in enumerate(rows):
        source = Source(name, index + 1)
        if isinstance(row, dict):
            scan.rows.append((source, row))
        else:
            scan.issues.append((source, not_an_object(source, row)))
    return _build_dataset(name, scan, kind)


def detect_format(row: dict[str, Any], kind: str) -> str | None:
    """The format of one row from its keys, or None when no format of `kind` fits.

    Detection looks at keys (and, to tell `hh` from `trl_implicit` and `rlhf_chat` from
    `openai_rft`, at the shape of the values); validation happens later.

    Args:
        row: one dataset row.
        kind: "preference" or "prompt".

    Raises:
        RlhfkitError: `kind` is not "preference" or "prompt".
    """
    if kind not in KINDS:
        raise RlhfkitError(f"unknown dataset kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind == "preference":
        return _detect_preference(row)
    return _detect_prompt(row)


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise RlhfkitError(
            f"unknown dataset kind {kind!r}; choose one of: {', '.join(KINDS)} "
            "(or leave it out to detect it)"
        )


def _detect_preference(row: dict[str, Any]) -> str | None:
    if "preferred_output" in row or "non_preferred_output" in row:
        return "openai_dpo"
    if any(key in row for key in CANDIDATE_KEYS):
        return "rlhf_chat" if "messages" in row else "rlhf_text"
    if "prompt" in row and ("chosen" in row or "rejected" in row):
        return "trl"
    if "chosen" in row and "rejected" in row:
        if _is_hh(row["chosen"]) and _is_hh(row["rejected"]):
            return "hh"
        return "trl_implicit"
    return None


def _is_hh(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    has_human = value.startswith("Human:") or "\n\nHuman:" in value
    return has_human and "\n\nAssistant:" in value


def _detect_prompt(row: dict[str, Any]) -> str | None:
    if "input_text" in row:
        return "rlhf_text"
    if "messages" in row:
        messages = row["messages"] if isinstance(row["messages"], list) else []
        items = [m for m in messages if isinstance(m, dict)]
        if any("role" in m for m in items):
            return "openai_rft"
        if any("author" in m for m in items) or "context" in row:
            return "rlhf_chat"
        return "openai_rft"
    if "prompt" in row:
        return "trl"
    return None


# ---------------------------------------------------------------- building a dataset


@dataclass
class _First:
    """The first row whose format was detected: it fixes the dataset's kind and format."""

    kind: str
    format: str
    source: Source


def _build_dataset(name: str, scan: RowScan, kind: str | None, bad_rows: str = "error") -> Dataset:
    issues = list(scan.issues)
    first: _First | None = None
    records: list[Any] = []
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for source, row in scan.rows:
        check = RowCheck(source)
        detected = _row_kind_format(row, check, kind, first)
        record = None
        if detected is not None:
            first = first or _First(*detected, source)
            record = RECORD_PARSERS[detected[0]](row, check, detected[1])
        if check.problems:
            issues.extend((source, problem) for problem in check.problems)
            continue
        if isinstance(record, PreferenceRecord) and record.chosen == record.rejected:
            warnings.append(
                f"{source}: chosen and rejected are identical, so the row teaches no "
                "preference; remove it or fix one of them"
            )
        records.append(record)
        rows.append(row)
    issues = sort_issues(issues, scan.files)
    # a file that cannot be read whole is not a bad row: it is never skipped
    unreadable = [issue for issue in issues if issue[0].file in scan.unreadable]
    if issues and (bad_rows == "error" or unreadable):
        count = len({source for source, _ in issues})
        raise DatasetError(
            f"dataset {name}: {count} bad row(s), {len(issues)} problem(s); fix or remove "
            "these rows"
            + (
                ""
                if unreadable
                else ", or set bad_rows=skip (--bad-rows skip in data convert and score) to leave "
                "them out, counted and listed"
            ),
            [problem for _, problem in issues],
        )
    if first is None or not records:
        if not issues:
            raise DatasetError(
                f"dataset {name} has no rows; add at least one JSON object (one per line in "
                ".jsonl files)"
            )
        raise DatasetError(
            f"dataset {name} has no valid row: bad_rows=skip left out all "
            f"{len({source for source, _ in issues})} of its rows; fix them",
            [problem for _, problem in issues],
        )
    return Dataset(
        first.kind,
        first.format,
        records,
        list(scan.files),
        warnings,
        rows,
        issues,
        scan.content.hexdigest(),
    )


def _row_kind_format(
    row: dict[str, Any], check: RowCheck, kind: str | None, first: _First | None
) -> tuple[str, str] | None:
    """The (kind, format) of a row, or None after recording why it has none that fits."""
    kinds = [kind] if kind else list(KINDS)
    if first is not None and kind is None:
        kinds.sort(key=lambda k: k != first.kind)
    found = next(((k, f) for k in kinds if (f := detect_format(row, k)) is not None), None)
    if found is None:
        check.fail(_unknown_format(row, kind or (first.kind if first else None)))
        return None
    if first is None or found == (first.kind, first.format):
        return found
    cross_kind = found[0] != first.kind
    label = f"{found[1]} ({found[0]})" if cross_kind else found[1]
    first_label = f"{first.format} ({first.kind})" if cross_kind else first.format
    check.problems.append(
        f"{check.source} is format {label} but the dataset's first row ({first.source}) is "
        f"format {first_label}; one dataset must use one format"
    )
    return None


def _unknown_format(row: dict[str, Any], kind: str | None) -> str:
    keys = sorted(map(str, row))
    kinds = [kind] if kind else list(KINDS)
    accepted = "; ".join(
        f"accepted {k} formats: "
        + ", ".join(f"{fmt} ({fields})" for fmt, fields in FORMAT_KEYS[k].items())
        for k in kinds
    )
    message = f"unknown {kind or 'dataset'} format: found keys {keys}; {accepted}"
    if kind is not None:
        other = "prompt" if kind == "preference" else "preference"
        other_format = detect_format(row, other)
        if other_format is not None:
            message += f" (the row looks like a {other} row in format {other_format})"
    return message
