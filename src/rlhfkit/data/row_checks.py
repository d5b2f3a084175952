"""The checks of one row's fields: each records what is wrong (file:line, field, reason) on
a `RowCheck` and returns None, or returns the field's value."""

from __future__ import annotations

import json
import math
from typing import Any

from rlhfkit.data.reader import json_type_name
from rlhfkit.data.records import TEXT_PART_TYPES, Message, Source

AUTHORS = ("user", "assistant")
ROLES = ("system", "user", "assistant")
MISSING: Any = object()


class RowCheck:
    """Collects the problems of one row, each prefixed with the row's `file:line`."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(f"{self.source}: {message}")


def shown(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({json_type_name(value)})"


def field(row: dict[str, Any], key: str, check: RowCheck, where: str) -> Any:
    """row[key], or MISSING after recording that `where` lacks it."""
    if key in row:
        return row[key]
    check.fail(f"{where} is missing key '{key}'" if where else f"missing key '{key}'")
    return MISSING


def text_field(value: Any, name: str, check: RowCheck) -> str | None:
    """A non-empty string, or None after recording what is wrong (nothing when missing)."""
    if value is MISSING:
        return None
    if not isinstance(value, str):
        check.fail(f"{name} must be a string, found {json_type_name(value)}")
        return None
    if not value.strip():
        check.fail(f"{name} is empty (or whitespace only)")
        return None
    return value


def content_field(value: Any, name: str, check: RowCheck, *, parts: bool) -> str | None:
    """A message's content: a non-empty string or, with `parts` (OpenAI's formats), also a
    list of text parts [{"type": "text", "text": ...}], joined; None after recording what is
    wrong (nothing when missing)."""
    if not parts or value is MISSING or isinstance(value, str):
        return text_field(value, name, check)
    if not isinstance(value, list):
        check.fail(
            f"{name} must be a string or a list of {{type: text, text}} parts, "
            f"found {json_type_name(value)}"
        )
        return None
    texts = [_text_part(part, f"{name}[{i}]", check) for i, part in enumerate(value)]
    if any(text is None for text in texts):
        return None
    return text_field("".join(texts), name, check)


def _text_part(part: Any, name: str, check: RowCheck) -> str | None:
    """The text of one {type: text, text} content part, or None after recording why not."""
    if not isinstance(part, dict):
        check.fail(f"{name} must be an object {{type: text, text}}, found {json_type_name(part)}")
        return None
    kind = field(part, "type", check, name)
    text = field(part, "text", check, name) if kind in TEXT_PART_TYPES else MISSING
    if kind is MISSING:
        return None
    if kind not in TEXT_PART_TYPES:
        allowed = " or ".join(repr(t) for t in TEXT_PART_TYPES)
        check.fail(f"{name}.type must be {allowed} (only text is read), found {shown(kind)}")
        return None
    if text is MISSING:
        return None
    if not isinstance(text, str):
        check.fail(f"{name}.text must be a string, found {json_type_name(text)}")
        return None
    return text


def choice_field(value: Any, check: RowCheck) -> int | None:
    if value is MISSING:
        return None
    if type(value) is int and value in (0, 1):
        return value
    check.fail(
        f"choice must be 0 or 1 (the index of the preferred candidate), found {shown(value)}"
    )
    return None


def margin_field(row: dict[str, Any], check: RowCheck) -> float | None:
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
    check.fail(f"margin must be a finite number, found {shown(value)}")
    return None


def context_field(row: dict[str, Any], check: RowCheck) -> list[Message] | None:
    """The optional rlhf_chat `context` as a leading system message (none when empty)."""
    value = row.get("context")
    if value is None:
        return []
    if not isinstance(value, str):
        check.fail(f"context must be a string, found {json_type_name(value)}")
        return None
    return [Message("system", value)] if value.strip() else []


def message_list_field(value: Any, name: str, key: str, check: RowCheck) -> list[Any] | None:
    if value is MISSING:
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


def author_messages(value: Any, check: RowCheck) -> list[Message] | None:
    """rlhf_chat messages: {author, content}, alternating user/assistant, user first and last."""
    items = message_list_field(value, "messages", "author", check)
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
        author = field(item, "author", check, name)
        content = text_field(field(item, "content", check, name), f"{name}.content", check)
        expected = AUTHORS[i % 2]
        if author is MISSING:
            continue
        if author not in AUTHORS:
            check.fail(f"{name}.author must be 'user' or 'assistant', found {shown(author)}")
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


def role_messages(
    value: Any, name: str, check: RowCheck, *, last: str | None, parts: bool = False
) -> list[Message] | None:
    """{role, content} messages; system messages only at the start; `last` role if given.

    With `parts` (OpenAI's formats) a content may also be a list of text parts
    (`content_field`). Keys of a message other than role and content are ignored.
    """
    items = message_list_field(value, name, "role", check)
    if items is None:
        return None
    out: list[Message] = []
    for i, item in enumerate(items):
        here = f"{name}[{i}]"
        if not isinstance(item, dict):
            check.fail(f"{here} must be an object {{role, content}}, found {json_type_name(item)}")
            continue
        role = field(item, "role", check, here)
        content = content_field(
            field(item, "content", check, here), f"{here}.content", check, parts=parts
        )
        if role is MISSING:
            continue
        if role not in ROLES:
            check.fail(f"{here}.role must be 'system', 'user' or 'assistant', found {shown(role)}")
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


def assistant_reply(value: Any, name: str, check: RowCheck, *, parts: bool = False) -> str | None:
    """The content of a conversational response (TRL's `chosen`, OpenAI's `preferred_output`):
    a list of exactly one assistant message (`parts`: as in `role_messages`)."""
    if value is MISSING:
        return None
    if not isinstance(value, list) or len(value) != 1:
        found = f"{len(value)} messages" if isinstance(value, list) else json_type_name(value)
        check.fail(
            f"{name} must be a list of exactly one assistant message "
            f'[{{"role": "assistant", "content": ...}}] like the conversational prompt, '
            f"found {found}"
        )
        return None
    messages = role_messages(value, name, check, last="assistant", parts=parts)
    return messages[0].content if messages else None
