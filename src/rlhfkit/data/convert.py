"""Write a dataset in the rlhf_pipeline (`rlhf`), TRL (`trl`) or OpenAI (`openai`) format.

`rlhf` preference rows are `input_text`, `candidate_0`, `candidate_1`, `choice` when the
prompt is one plain user turn, otherwise `messages` [{author, content}] with `context` from a
leading system message; the candidates keep the record's order (`choice`), so an rlhf file
converted to rlhf comes back unchanged. `trl` preference rows are `prompt`, `chosen`,
`rejected`: strings for plain prompts, [{role, content}] conversations for chat prompts. TRL
has no candidate order, so a record read back from trl has `choice` 0. `openai` preference
rows are OpenAI's preference fine-tuning rows (`openai_dpo`): `input` {`messages`},
`preferred_output`, `non_preferred_output`, always as conversations (no candidate order
either). Prompt datasets become `input_text` (or the chat form), `prompt`, and `messages`
(`openai_rft`). Every row keeps its `margin` and its other fields (`extra`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.data.formats import Dataset, dropped_rows_path, load_dataset, record_dropped
from rlhfkit.data.records import Message, PreferenceRecord, PromptRecord
from rlhfkit.errors import DatasetError, RlhfkitError
from rlhfkit.fileio import atomic_write_jsonl, check_output_path

logger = logging.getLogger(__name__)
TARGETS = ("rlhf", "trl", "openai")
OUTPUT_SUFFIXES = (".jsonl", ".jsonl.gz")
_AUTHORS = ("user", "assistant")


class _CannotWrite(Exception):
    """A record that the target format cannot express (reported with its file:line)."""


def convert_file(
    src: str | Path, dst: str | Path, to: str, kind: str | None = None, bad_rows: str = "error"
) -> int:
    """Read a dataset in any supported format and write it in another.

    Args:
        src: the input dataset (a file, folder or glob; see `rlhfkit.data.reader.find_files`).
        dst: the output file, `.jsonl` or `.jsonl.gz` (gzip); written atomically.
        to: one of `TARGETS`: "rlhf", "trl" or "openai".
        kind: "preference", "prompt", or None to detect it.
        bad_rows: "error" or "skip": invalid rows are left out, logged as a warning and
            listed beside `dst` (`dropped_rows_path`).

    Returns:
        The number of rows written.

    Raises:
        RlhfkitError: `to` is not a known target or `dst` has an unsupported suffix.
        DatasetError: the input is invalid or a row cannot be expressed in the target format.
    """
    _check_target(to)
    if not str(dst).endswith(OUTPUT_SUFFIXES):
        raise RlhfkitError(
            f"cannot write {dst}: the output must end in .jsonl or .jsonl.gz (gzip-compressed)"
        )
    check_output_path(dst)
    dataset = load_dataset(src, kind, bad_rows)
    count = atomic_write_jsonl(dst, to_rows(dataset, to))
    for line in record_dropped({str(src): dataset}, dropped_rows_path(dst)):
        logger.warning(line)
    return count


def to_rows(dataset: Dataset, to: str) -> list[dict[str, Any]]:
    """The dataset's records as rows of the target format.

    Args:
        dataset: a loaded dataset (preference or prompt).
        to: one of `TARGETS`: "rlhf", "trl" or "openai".

    Returns:
        One JSON-ready dict per record, in order.

    Raises:
        RlhfkitError: `to` is not a known target.
        DatasetError: some records cannot be expressed in the target format (for example a
            conversation that does not alternate user/assistant, written as rlhf); every such
            row is listed with its file:line.
    """
    _check_target(to)
    writer = _WRITERS[dataset.kind, to]
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for record in dataset.records:
        try:
            rows.append(writer(record))
        except _CannotWrite as exc:
            problems.append(f"{record.source}: {exc}")
    if problems:
        raise DatasetError(
            f"{len(problems)} row(s) of {', '.join(dataset.files)} cannot be written in the "
            f"{to} format; fix or remove these rows, or convert to another format",
            problems,
        )
    return rows


def _check_target(to: str) -> None:
    if to not in TARGETS:
        raise RlhfkitError(f"unknown output format {to!r}; choose one of: {', '.join(TARGETS)}")


def _is_plain(record: PreferenceRecord | PromptRecord) -> bool:
    """True when the prompt is one user turn that did not come as a conversation."""
    messages = record.messages
    return not record.chat and len(messages) == 1 and messages[0].role == "user"


def _rlhf_prompt(record: PreferenceRecord | PromptRecord) -> dict[str, Any]:
    """`input_text`, or `context` plus `messages` [{author, content}] for a conversation."""
    if _is_plain(record):
        return {"input_text": record.messages[0].content}
    messages = list(record.messages)
    fields: dict[str, Any] = {}
    if messages[0].role == "system":
        fields["context"] = messages.pop(0).content
    for index, message in enumerate(messages):
        if message.role != _AUTHORS[index % 2]:
            raise _CannotWrite(
                f"message {index} of the prompt is a {message.role} message, but rlhf chat "
                "messages (after one optional system context) alternate user, assistant, "
                "user, ... starting with user"
            )
    fields["messages"] = [{"author": m.role, "content": m.content} for m in messages]
    return fields


def _role_messages(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, str]]:
    """[{role, content}] messages, as TRL and OpenAI write conversations."""
    return [{"role": m.role, "content": m.content} for m in messages]


def _trl_prompt(record: PreferenceRecord | PromptRecord) -> dict[str, Any]:
    if _is_plain(record):
        return {"prompt": record.messages[0].content}
    return {"prompt": _role_messages(record.messages)}


def _with_rest(fields: dict[str, Any], record: PreferenceRecord | PromptRecord) -> dict[str, Any]:
    """Add the record's margin (preferences) and its extra fields to the format's fields."""
    if isinstance(record, PreferenceRecord) and record.margin is not None:
        fields["margin"] = record.margin
    for key, value in record.extra.items():
        if key in fields:
            raise _CannotWrite(
                f"its extra field '{key}' has the name of a field of the target format; "
                "rename or drop it"
            )
        fields[key] = value
    return fields


def rlhf_preference_row(record: PreferenceRecord) -> dict[str, Any]:
    """One preference record as an rlhf_pipeline row (every other field of it kept)."""
    return _rlhf_preference(record)


def _rlhf_preference(record: PreferenceRecord) -> dict[str, Any]:
    first, second = record.candidates
    fields = _rlhf_prompt(record)
    fields.update(candidate_0=first, candidate_1=second, choice=record.choice)
    return _with_rest(fields, record)


def _trl_preference(record: PreferenceRecord) -> dict[str, Any]:
    fields = _trl_prompt(record)
    if _is_plain(record):
        fields.update(chosen=record.chosen, rejected=record.rejected)
    else:
        fields["chosen"] = _role_messages([Message("assistant", record.chosen)])
        fields["rejected"] = _role_messages([Message("assistant", record.rejected)])
    return _with_rest(fields, record)


def _openai_preference(record: PreferenceRecord) -> dict[str, Any]:
    fields = {
        "input": {"messages": _role_messages(record.messages)},
        "preferred_output": _role_messages([Message("assistant", record.chosen)]),
        "non_preferred_output": _role_messages([Message("assistant", record.rejected)]),
    }
    return _with_rest(fields, record)


def _rlhf_prompt_row(record: PromptRecord) -> dict[str, Any]:
    return _with_rest(_rlhf_prompt(record), record)


def _trl_prompt_row(record: PromptRecord) -> dict[str, Any]:
    return _with_rest(_trl_prompt(record), record)


def _openai_prompt_row(record: PromptRecord) -> dict[str, Any]:
    return _with_rest({"messages": _role_messages(record.messages)}, record)


_WRITERS: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
    ("preference", "rlhf"): _rlhf_preference,
    ("preference", "trl"): _trl_preference,
    ("prompt", "rlhf"): _rlhf_prompt_row,
    ("prompt", "trl"): _trl_prompt_row,
    ("preference", "openai"): _openai_preference,
    ("prompt", "openai"): _openai_prompt_row,
}
