"""Each supported format's rows -> records: one parser per format.

`RECORD_PARSERS[kind](row, check, format)` gives a `PreferenceRecord` or `PromptRecord`, or
None after recording on `check` every problem of the row (file:line, field, reason).
`rlhfkit.data.formats` detects the format and builds the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from rlhfkit.data.reader import json_type_name
from rlhfkit.data.records import Message, PreferenceRecord, PromptRecord
from rlhfkit.data.row_checks import (
    MISSING,
    RowCheck,
    assistant_reply,
    author_messages,
    choice_field,
    context_field,
    field,
    margin_field,
    role_messages,
    text_field,
)

CANDIDATE_KEYS = ("candidate_0", "candidate_1", "choice")
_OWN_KEYS: dict[str, dict[str, frozenset[str]]] = {
    "preference": {
        "rlhf_text": frozenset({"input_text", *CANDIDATE_KEYS, "margin"}),
        "rlhf_chat": frozenset({"messages", "context", *CANDIDATE_KEYS, "margin"}),
        "trl": frozenset({"prompt", "chosen", "rejected", "margin"}),
        "trl_implicit": frozenset({"chosen", "rejected", "margin"}),
        "hh": frozenset({"chosen", "rejected", "margin"}),
        "openai_dpo": frozenset({"input", "preferred_output", "non_preferred_output", "margin"}),
    },
    "prompt": {
        "rlhf_text": frozenset({"input_text"}),
        "rlhf_chat": frozenset({"messages", "context"}),
        "trl": frozenset({"prompt"}),
        "openai_rft": frozenset({"messages"}),
    },
}
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_Prompt = tuple[tuple[Message, ...], bool]


# ---------------------------------------------------------------- preference formats


class _Pair(NamedTuple):
    """What a preference-format parser extracts from one row."""

    messages: tuple[Message, ...]
    chosen: str
    rejected: str
    choice: int
    chat: bool


def _candidates(row: dict[str, Any], check: RowCheck) -> tuple[str, str, int] | None:
    """(chosen, rejected, choice) from candidate_0, candidate_1 and choice."""
    first = text_field(field(row, "candidate_0", check, ""), "candidate_0", check)
    second = text_field(field(row, "candidate_1", check, ""), "candidate_1", check)
    choice = choice_field(field(row, "choice", check, ""), check)
    if first is None or second is None or choice is None:
        return None
    return (first, second, 0) if choice == 0 else (second, first, 1)


def _pref_rlhf_text(row: dict[str, Any], check: RowCheck) -> _Pair | None:
    prompt = text_field(field(row, "input_text", check, ""), "input_text", check)
    candidates = _candidates(row, check)
    if prompt is None or candidates is None:
        return None
    return _Pair((Message("user", prompt),), *candidates, chat=False)


def _pref_rlhf_chat(row: dict[str, Any], check: RowCheck) -> _Pair | None:
    context = context_field(row, check)
    messages = author_messages(field(row, "messages", check, ""), check)
    candidates = _candidates(row, check)
    if context is None or messages is None or candidates is None:
        return None
    return _Pair((*context, *messages), *candidates, chat=True)


def _pref_trl(row: dict[str, Any], check: RowCheck) -> _Pair | None:
    prompt = field(row, "prompt", check, "")
    chosen = field(row, "chosen", check, "")
    rejected = field(row, "rejected", check, "")
    if isinstance(prompt, list):
        messages = role_messages(prompt, "prompt", check, last="user")
        chosen_text = assistant_reply(chosen, "chosen", check)
        rejected_text = assistant_reply(rejected, "rejected", check)
        chat = True
    elif isinstance(prompt, str) or prompt is MISSING:
        text = text_field(prompt, "prompt", check)
        messages = [Message("user", text)] if text is not None else None
        chosen_text = text_field(chosen, "chosen", check)
        rejected_text = text_field(rejected, "rejected", check)
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


def _pref_trl_implicit(row: dict[str, Any], check: RowCheck) -> _Pair | None:
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


def _implicit_text(chosen: str, rejected: str, check: RowCheck) -> _Pair | None:
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


def _implicit_conversation(chosen: list[Any], rejected: list[Any], check: RowCheck) -> _Pair | None:
    """Shared leading messages are the prompt; each final assistant message is a response."""
    conversations = {
        name: role_messages(value, name, check, last="assistant")
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


def _pref_hh(row: dict[str, Any], check: RowCheck) -> _Pair | None:
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


def _hh_turns(text: str, name: str, check: RowCheck) -> list[Message] | None:
    """Parse '\\n\\nHuman: ...\\n\\nAssistant: ...' into messages (prompt turns + response)."""
    body = text if text.startswith("\n\n") else "\n\n" + text
    parts = HH_TURN.split(body)
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


def _pref_openai_dpo(row: dict[str, Any], check: RowCheck) -> _Pair | None:
    prompt = _openai_input(field(row, "input", check, ""), check)
    chosen, rejected = (
        assistant_reply(field(row, name, check, ""), name, check, parts=True)
        for name in ("preferred_output", "non_preferred_output")
    )
    if prompt is None or chosen is None or rejected is None:
        return None
    return _Pair(tuple(prompt), chosen, rejected, 0, True)


def _openai_input(value: Any, check: RowCheck) -> list[Message] | None:
    """The prompt of an openai_dpo row: `input.messages` (`input`'s other keys, such as
    `tools` and `parallel_tool_calls`, are ignored)."""
    if value is MISSING:
        return None
    if not isinstance(value, dict):
        check.fail(f"input must be an object {{messages, ...}}, found {json_type_name(value)}")
        return None
    return _openai_messages(field(value, "messages", check, "input"), "input.messages", check)


def _openai_messages(value: Any, name: str, check: RowCheck) -> list[Message] | None:
    """OpenAI's prompt messages (openai_rft's `messages`, openai_dpo's `input.messages`):
    {role, content}, content a string or a list of text parts, ending with a user turn."""
    return role_messages(value, name, check, last="user", parts=True)


# ---------------------------------------------------------------- prompt formats


def _prompt_rlhf_text(row: dict[str, Any], check: RowCheck) -> _Prompt | None:
    text = text_field(row["input_text"], "input_text", check)
    return None if text is None else ((Message("user", text),), False)


def _prompt_rlhf_chat(row: dict[str, Any], check: RowCheck) -> _Prompt | None:
    context = context_field(row, check)
    messages = author_messages(field(row, "messages", check, ""), check)
    if context is None or messages is None:
        return None
    return (*context, *messages), True


def _prompt_trl(row: dict[str, Any], check: RowCheck) -> _Prompt | None:
    prompt = row["prompt"]
    if isinstance(prompt, list):
        messages = role_messages(prompt, "prompt", check, last="user")
        return None if messages is None else (tuple(messages), True)
    if not isinstance(prompt, str):
        check.fail(
            "prompt must be a string or a list of {role, content} messages, "
            f"found {json_type_name(prompt)}"
        )
        return None
    text = text_field(prompt, "prompt", check)
    return None if text is None else ((Message("user", text),), False)


def _prompt_openai_rft(row: dict[str, Any], check: RowCheck) -> _Prompt | None:
    messages = _openai_messages(row["messages"], "messages", check)
    return None if messages is None else (tuple(messages), True)


_PREFERENCE_PARSERS: dict[str, Callable[[dict[str, Any], RowCheck], _Pair | None]] = {
    "rlhf_text": _pref_rlhf_text,
    "rlhf_chat": _pref_rlhf_chat,
    "trl": _pref_trl,
    "trl_implicit": _pref_trl_implicit,
    "hh": _pref_hh,
    "openai_dpo": _pref_openai_dpo,
}
_PROMPT_PARSERS: dict[str, Callable[[dict[str, Any], RowCheck], _Prompt | None]] = {
    "rlhf_text": _prompt_rlhf_text,
    "rlhf_chat": _prompt_rlhf_chat,
    "trl": _prompt_trl,
    "openai_rft": _prompt_openai_rft,
}


def _extra(row: dict[str, Any], kind: str, fmt: str) -> dict[str, Any]:
    own = _OWN_KEYS[kind][fmt]
    return {key: value for key, value in row.items() if key not in own}


def _preference_record(row: dict[str, Any], check: RowCheck, fmt: str) -> PreferenceRecord | None:
    pair = _PREFERENCE_PARSERS[fmt](row, check)
    margin = margin_field(row, check)
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


def _prompt_record(row: dict[str, Any], check: RowCheck, fmt: str) -> PromptRecord | None:
    parsed = _PROMPT_PARSERS[fmt](row, check)
    if parsed is None or check.problems:
        return None
    messages, chat = parsed
    return PromptRecord(messages, check.source, _extra(row, "prompt", fmt), chat)


RECORD_PARSERS: dict[str, Callable[[dict[str, Any], RowCheck, str], Any]] = {
    "preference": _preference_record,
    "prompt": _prompt_record,
}
