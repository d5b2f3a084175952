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

Any preference row may carry a numeric `margin`. Prompt formats: `rlhf_text` (`input_text`),
`rlhf_chat` (`messages` with `author`, optional `context`), `trl` (`prompt`, a string or a
conversation) and `openai_rft` (`messages` with `role`, ending with a user turn). Every
field that is not the format's own is kept in the record's `extra`.

Every problem names `file:line`, the field and the reason; all problems of a dataset are
collected and raised together as one `DatasetError`, or, with `bad_rows="skip"`, the rows
that have them are left out and kept in `Dataset.dropped` (never silently: every command
that skips rows counts them by reason and lists them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rlhfkit.data.reader import RowScan, json_type_name, not_an_object, scan_rows, sort_issues
from rlhfkit.data.records import Message, PreferenceRecord, PromptRecord, Source
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

_CANDIDATE_KEYS = ("candidate_0", "candidate_1", "choice")
_OWN_KEYS: dict[str, dict[str, frozenset[str]]] = {
    "preference": {
        "rlhf_text": frozenset({"input_text", *_CANDIDATE_KEYS, "margin"}),
        "rlhf_chat": frozenset({"messages", "context", *_CANDIDATE_KEYS, "margin"}),
        "trl": frozenset({"prompt", "chosen", "rejected", "margin"}),
        "trl_implicit": frozenset({"chosen", "rejected", "margin"}),
        "hh": frozenset({"chosen", "rejected", "margin"}),
    },
    "prompt": {
        "rlhf_text": frozenset({"input_text"}),
        "rlhf_chat": frozenset({"messages", "context"}),
        "trl": frozenset({"prompt"}),
        "openai_rft": frozenset({"messages"}),
    },
}
_AUTHORS = ("user", "assistant")
_ROLES = ("system", "user", "assistant")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_MISSING: Any = object()
_Prompt = tuple[tuple[Message, ...], bool]


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
    `load_preferences`.
    """
    scan = scan_rows(path)
    scan.rows = [
        (source, {**row, "choice": 0} if _unjudged_pair(row) else row) for source, row in scan.rows
    ]
    return _build_dataset(str(path), scan, "preference")


def _unjudged_pair(row: dict[str, Any]) -> bool:
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
    if any(key in row for key in _CANDIDATE_KEYS):
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


class _Check:
    """Collects the problems of one row, each prefixed with the row's `file:line`."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(f"{self.source}: {message}")


def _build_dataset(name: str, scan: RowScan, kind: str | None, bad_rows: str = "error") -> Dataset:
    issues = list(scan.issues)
    first: _First | None = None
    records: list[Any] = []
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for source, row in scan.rows:
        check = _Check(source)
        detected = _row_kind_format(row, check, kind, first)
        record = None
        if detected is not None:
            first = first or _First(*detected, source)
            record = _PARSERS[detected[0]](row, check, detected[1])
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
    row: dict[str, Any], check: _Check, kind: str | None, first: _First | None
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


# ---------------------------------------------------------------- field checks


def _show(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({json_type_name(value)})"


def _key(row: dict[str, Any], key: str, check: _Check, where: str) -> Any:
    """row[key], or _MISSING after recording that `where` lacks it."""
    if key in row:
        return row[key]
    check.fail(f"{where} is missing key '{key}'" if where else f"missing key '{key}'")
    return _MISSING


def _text(value: Any, name: str, check: _Check) -> str | None:
    """A non-empty string, or None after recording what is wrong (nothing when missing)."""
    if value is _MISSING:
        return None
    if not isinstance(value, str):
        check.fail(f"{name} must be a string, found {json_type_name(value)}")
        return None
    if not value.strip():
        check.fail(f"{name} is empty (or whitespace only)")
        return None
    return value


def _choice(value: Any, check: _Check) -> int | None:
    if value is _MISSING:
        return None
    if type(value) is int and value in (0, 1):
        return value
    check.fail(
        f"choice must be 0 or 1 (the index of the preferred candidate), found {_show(value)}"
    )
    return None


def _margin(row: dict[str, Any], check: _Check) -> float | None:
    value = row.get("margin")
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            margin = float(value)
        except OverflowError:
            margin = math.inf
        if math.isfinite(margin):
            return margin
    check.fail(f"margin must be a finite number, found {_show(value)}")
    return None


def _context(row: dict[str, Any], check: _Check) -> list[Message] | None:
    """The optional rlhf_chat `context` as a leading system message (none when empty)."""
    value = row.get("context")
    if value is None:
        return []
    if not isinstance(value, str):
        check.fail(f"context must be a string, found {json_type_name(value)}")
        return None
    return [Message("system", value)] if value.strip() else []


def _message_list(value: Any, name: str, key: str, check: _Check) -> list[Any] | None:
    if value is _MISSING:
        return None
    if not isinstance(value, list):
        check.fail(
            f"{name} must be a list of {{{key}, content}} objects, found {json_type_name(value)}"
        )
        return None
    if not value:
        check.fail(f"{name} is empty; it needs at least one message")
        return None
    return value


def _author_messages(value: Any, check: _Check) -> list[Message] | None:
    """rlhf_chat messages: {author, content}, alternating user/assistant, user first and last."""
    items = _message_list(value, "messages", "author", check)
    if items is None:
        return None
    out: list[Message] = []
    for i, item in enumerate(items):
        name = f"messages[{i}]"
        if not isinstance(item, dict):
            check.fail(
                f"{name} must be an object {{author, content}}, found {json_type_name(item)}"
            )
            continue
        author = _key(item, "author", check, name)
        content = _text(_key(item, "content", check, name), f"{name}.content", check)
        expected = _AUTHORS[i % 2]
        if author is _MISSING:
            continue
        if author not in _AUTHORS:
            check.fail(f"{name}.author must be 'user' or 'assistant', found {_show(author)}")
        elif author != expected:
            check.fail(
                f"{name}.author must be '{expected}' (messages alternate user, assistant, "
                f"user, ... starting with user), found '{author}'"
            )
        elif content is not None:
            out.append(Message(author, content))
    if len(out) != len(items):
        return None
    if out[-1].role != "user":
        check.fail(
            f"messages[{len(out) - 1}].author must be 'user' (the last message is the turn to "
            "answer), found 'assistant'"
        )
        return None
    return out


def _role_messages(
    value: Any, name: str, check: _Check, *, last: str | None
) -> list[Message] | None:
    """{role, content} messages; system messages only at the start; `last` role if given."""
    items = _message_list(value, name, "role", check)
    if items is None:
        return None
    out: list[Message] = []
    for i, item in enumerate(items):
        here = f"{name}[{i}]"
        if not isinstance(item, dict):
            check.fail(f"{here} must be an object {{role, content}}, found {json_type_name(item)}")
            continue
        role = _key(item, "role", check, here)
        content = _text(_key(item, "content", check, here), f"{here}.content", check)
        if role is _MISSING:
            continue
        if role not in _ROLES:
            check.fail(f"{here}.role must be 'system', 'user' or 'assistant', found {_show(role)}")
        elif role == "system" and any(m.role != "system" for m in out):
            check.fail(f"{here}.role is 'system' but system messages may only come first")
        elif content is not None:
            out.append(Message(role, content))
    if len(out) != len(items):
        return None
    if last is not None and out[-1].role != last:
        check.fail(
            f"{name}[{len(out) - 1}].role must be '{last}' (the last message of a "
            f"{'prompt' if last == 'user' else 'response'}), found '{out[-1].role}'"
        )
        return None
    return out


def _assistant_reply(value: Any, name: str, check: _Check) -> str | None:
    """The content of a TRL conversational response: a list of exactly one assistant message."""
    if value is _MISSING:
        return None
    if not isinstance(value, list) or len(value) != 1:
        found = f"{len(value)} messages" if isinstance(value, list) else json_type_name(value)
        check.fail(
            f"{name} must be a list of exactly one assistant message "
            f'[{{"role": "assistant", "content": ...}}] like the conversational prompt, '
            f"found {found}"
        )
        return None
    messages = _role_messages(value, name, check, last="assistant")
    return messages[0].content if messages else None


# ---------------------------------------------------------------- preference formats


class _Pair(NamedTuple):
    """What a preference-format parser extracts from one row."""

    messages: tuple[Message, ...]
    chosen: str
    rejected: str
    choice: int
    chat: bool


def _candidates(row: dict[str, Any], check: _Check) -> tuple[str, str, int] | None:
    """(chosen, rejected, choice) from candidate_0, candidate_1 and choice."""
    first = _text(_key(row, "candidate_0", check, ""), "candidate_0", check)
    second = _text(_key(row, "candidate_1", check, ""), "candidate_1", check)
    choice = _choice(_key(row, "choice", check, ""), check)
    if first is None or second is None or choice is None:
        return None
    return (first, second, 0) if choice == 0 else (second, first, 1)


def _pref_rlhf_text(row: dict[str, Any], check: _Check) -> _Pair | None:
    prompt = _text(_key(row, "input_text", check, ""), "input_text", check)
    candidates = _candidates(row, check)
    if prompt is None or candidates is None:
        return None
    return _Pair((Message("user", prompt),), *candidates, chat=False)


def _pref_rlhf_chat(row: dict[str, Any], check: _Check) -> _Pair | None:
    context = _context(row, check)
    messages = _author_messages(_key(row, "messages", check, ""), check)
    candidates = _candidates(row, check)
    if context is None or messages is None or candidates is None:
        return None
    return _Pair((*context, *messages), *candidates, chat=True)


def _pref_trl(row: dict[str, Any], check: _Check) -> _Pair | None:
    prompt = _key(row, "prompt", check, "")
    chosen = _key(row, "chosen", check, "")
    rejected = _key(row, "rejected", check, "")
    if isinstance(prompt, list):
        messages = _role_messages(prompt, "prompt", check, last="user")
        chosen_text = _assistant_reply(chosen, "chosen", check)
        rejected_text = _assistant_reply(rejected, "rejected", check)
        chat = True
    elif isinstance(prompt, str) or prompt is _MISSING:
        text = _text(prompt, "prompt", check)
        messages = [Message("user", text)] if text is not None else None
        chosen_text = _text(chosen, "chosen", check)
        rejected_text = _text(rejected, "rejected", check)
        chat = False
    else:
        check.fail(
            "prompt must be a string or a list of {role, content} messages, "
            f"found {json_type_name(prompt)}"
        )
        return None
    if messages is None or chosen_text is None or rejected_text is None:
        return None
    return _Pair(tuple(messages), chosen_text, rejected_text, 0, chat)


def _pref_trl_implicit(row: dict[str, Any], check: _Check) -> _Pair | None:
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _implicit_text(chosen, rejected, check)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _implicit_conversation(chosen, rejected, check)
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list)):
            check.fail(
                f"{name} must be a string or a list of {{role, content}} messages, "
                f"found {json_type_name(value)}"
            )
            return None
    check.fail(
        "chosen and rejected must both be strings or both be conversations, found "
        f"{json_type_name(chosen)} and {json_type_name(rejected)}"
    )
    return None


def _implicit_text(chosen: str, rejected: str, check: _Check) -> _Pair | None:
    """Split two strings into their shared prompt (cut at a word boundary) and responses."""
    if chosen == rejected:
        check.fail(
            "chosen and rejected are identical, so no prompt and responses can be told apart"
        )
        return None
    prefix = chosen[: _common_prefix_length(chosen, rejected)]
    prefix = re.sub(r"\S+\Z", "", prefix)
    if not prefix.strip():
        check.fail(
            "chosen and rejected share no prompt text at their start (an implicit-prompt row "
            "is prompt + response in both fields)"
        )
        return None
    responses = chosen[len(prefix) :], rejected[len(prefix) :]
    for name, response in zip(("chosen", "rejected"), responses, strict=True):
        if not response.strip():
            check.fail(f"{name} has no response after the shared prompt")
    if check.problems:
        return None
    return _Pair((Message("user", prefix),), *responses, choice=0, chat=False)


def _common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _implicit_conversation(chosen: list[Any], rejected: list[Any], check: _Check) -> _Pair | None:
    """Shared leading messages are the prompt; each final assistant message is a response."""
    conversations = {
        name: _role_messages(value, name, check, last="assistant")
        for name, value in (("chosen", chosen), ("rejected", rejected))
    }
    chosen_messages, rejected_messages = conversations["chosen"], conversations["rejected"]
    if chosen_messages is None or rejected_messages is None:
        return None
    prompt = chosen_messages[:-1]
    if prompt != rejected_messages[:-1]:
        at = next(
            (
                i
                for i, (a, b) in enumerate(zip(prompt, rejected_messages[:-1], strict=False))
                if a != b
            ),
            min(len(prompt), len(rejected_messages) - 1),
        )
        check.fail(
            "chosen and rejected must share every message before their final assistant "
            f"message; they differ at message {at}"
        )
        return None
    if not prompt or prompt[-1].role != "user":
        check.fail(
            "chosen must hold the prompt before its final assistant message, ending with a "
            "user message"
        )
        return None
    return _Pair(tuple(prompt), chosen_messages[-1].content, rejected_messages[-1].content, 0, True)


def _pref_hh(row: dict[str, Any], check: _Check) -> _Pair | None:
    chosen = _hh_turns(row["chosen"], "chosen", check)
    rejected = _hh_turns(row["rejected"], "rejected", check)
    if chosen is None or rejected is None:
        return None
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        at = next(
            (i for i, (a, b) in enumerate(zip(prompt, rejected[:-1], strict=False)) if a != b),
            min(len(prompt), len(rejected) - 1),
        )
        check.fail(
            "chosen and rejected must share every turn before the final Assistant turn; "
            f"they differ at turn {at + 1}"
        )
        return None
    return _Pair(tuple(prompt), chosen[-1].content, rejected[-1].content, 0, True)


def _hh_turns(text: str, name: str, check: _Check) -> list[Message] | None:
    """Parse '\\n\\nHuman: ...\\n\\nAssistant: ...' into messages (prompt turns + response)."""
    body = text if text.startswith("\n\n") else "\n\n" + text
    parts = _HH_TURN.split(body)
    if parts[0].strip():
        check.fail(f"{name} has text before its first '\\n\\nHuman:' turn")
        return None
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        turns.append(Message(role, content.removeprefix(" ")))
    problems = len(check.problems)
    for number, turn in enumerate(turns, start=1):
        if not turn.content.strip():
            speaker = "Human" if turn.role == "user" else "Assistant"
            check.fail(f"{name} turn {number} ({speaker}) is empty")
    if turns[-1].role != "assistant":
        check.fail(f"{name} must end with an '\\n\\nAssistant:' turn (the response), found Human")
    elif len(turns) < 2 or turns[-2].role != "user":
        check.fail(f"{name} must have a Human turn right before its final Assistant turn")
    return turns if len(check.problems) == problems else None


# ---------------------------------------------------------------- prompt formats


def _prompt_rlhf_text(row: dict[str, Any], check: _Check) -> _Prompt | None:
    text = _text(row["input_text"], "input_text", check)
    return None if text is None else ((Message("user", text),), False)


def _prompt_rlhf_chat(row: dict[str, Any], check: _Check) -> _Prompt | None:
    context = _context(row, check)
    messages = _author_messages(_key(row, "messages", check, ""), check)
    if context is None or messages is None:
        return None
    return (*context, *messages), True


def _prompt_trl(row: dict[str, Any], check: _Check) -> _Prompt | None:
    prompt = row["prompt"]
    if isinstance(prompt, list):
        messages = _role_messages(prompt, "prompt", check, last="user")
        return None if messages is None else (tuple(messages), True)
    if not isinstance(prompt, str):
        check.fail(
            "prompt must be a string or a list of {role, content} messages, "
            f"found {json_type_name(prompt)}"
        )
        return None
    text = _text(prompt, "prompt", check)
    return None if text is None else ((Message("user", text),), False)


def _prompt_openai_rft(row: dict[str, Any], check: _Check) -> _Prompt | None:
    messages = _role_messages(row["messages"], "messages", check, last="user")
    return None if messages is None else (tuple(messages), True)


_PREFERENCE_PARSERS: dict[str, Callable[[dict[str, Any], _Check], _Pair | None]] = {
    "rlhf_text": _pref_rlhf_text,
    "rlhf_chat": _pref_rlhf_chat,
    "trl": _pref_trl,
    "trl_implicit": _pref_trl_implicit,
    "hh": _pref_hh,
}
_PROMPT_PARSERS: dict[str, Callable[[dict[str, Any], _Check], _Prompt | None]] = {
    "rlhf_text": _prompt_rlhf_text,
    "rlhf_chat": _prompt_rlhf_chat,
    "trl": _prompt_trl,
    "openai_rft": _prompt_openai_rft,
}


def _extra(row: dict[str, Any], kind: str, fmt: str) -> dict[str, Any]:
    own = _OWN_KEYS[kind][fmt]
    return {key: value for key, value in row.items() if key not in own}


def _preference_record(row: dict[str, Any], check: _Check, fmt: str) -> PreferenceRecord | None:
    pair = _PREFERENCE_PARSERS[fmt](row, check)
    margin = _margin(row, check)
    if pair is None or check.problems:
        return None
    return PreferenceRecord(
        messages=pair.messages,
        chosen=pair.chosen,
        rejected=pair.rejected,
        source=check.source,
        choice=pair.choice,
        margin=margin,
        extra=_extra(row, "preference", fmt),
        chat=pair.chat,
    )


def _prompt_record(row: dict[str, Any], check: _Check, fmt: str) -> PromptRecord | None:
    parsed = _PROMPT_PARSERS[fmt](row, check)
    if parsed is None or check.problems:
        return None
    messages, chat = parsed
    return PromptRecord(messages, check.source, _extra(row, "prompt", fmt), chat)


_PARSERS: dict[str, Callable[[dict[str, Any], _Check, str], Any]] = {
    "preference": _preference_record,
    "prompt": _prompt_record,
}
