"""Typed records every dataset format is normalised into.

A prompt is a conversation: a tuple of `Message`s ending with a user turn. A preference
record adds the preferred and the other response (assistant text). Every record remembers
where it came from (`Source`: file and line) so later errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]

PREFERENCE_FORMATS = ("rlhf_text", "rlhf_chat", "trl", "trl_implicit", "hh", "openai_dpo")
PROMPT_FORMATS = ("rlhf_text", "rlhf_chat", "trl", "openai_rft")


@dataclass(frozen=True)
class Source:
    """Where a row came from: `file:line` (1-based line of the row's first character)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass
class PromptRecord:
    """A prompt row.

    Attributes:
        messages: the conversation so far; the last message is a user turn.
        source: file and line of the row.
        extra: every other field of the input row, kept for graders (`{{item.FIELD}}`).
        chat: False when the prompt was plain text (`input_text`, a TRL string prompt),
            True when it came as a conversation.
    """

    messages: tuple[Message, ...]
    source: Source
    extra: dict[str, Any] = field(default_factory=dict)
    chat: bool = False

    @property
    def text(self) -> str:
        """The prompt as plain text (the content of its single turn, or the turns joined)."""
        return messages_to_text(self.messages)


@dataclass
class PreferenceRecord:
    """A preference row: the prompt, the preferred and the other response.

    Attributes:
        messages: the prompt conversation; the last message is a user turn.
        chosen: the preferred assistant response.
        rejected: the other assistant response.
        choice: index of the preferred answer in the original row (rlhf_pipeline's
            `candidate_{choice}`); 0 for formats that have no candidate order.
        margin: optional per-row margin for the Bradley-Terry loss.
        source: file and line of the row.
        extra: every other field of the input row.
        chat: whether the prompt came as a conversation.
    """

    messages: tuple[Message, ...]
    chosen: str
    rejected: str
    source: Source
    choice: int = 0
    margin: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    chat: bool = False

    @property
    def text(self) -> str:
        return messages_to_text(self.messages)

    @property
    def candidates(self) -> tuple[str, str]:
        """(candidate_0, candidate_1) in the original order."""
        if self.choice == 0:
            return self.chosen, self.rejected
        return self.rejected, self.chosen

    def prompt_record(self) -> PromptRecord:
        return PromptRecord(self.messages, self.source, dict(self.extra), self.chat)


TEXT_PART_TYPES = ("text", "input_text", "output_text")
"""The content parts whose `text` rlhfkit reads, wherever OpenAI's message shapes are taken
(chat completions' `text`, the Responses API's and graders' `input_text`/`output_text`)."""


def text_of_parts(parts: Any) -> str | None:
    """The text of an OpenAI content list, every part a text part, joined as they stand;
    None when `parts` is not such a list (the caller says what is wrong)."""
    if not isinstance(parts, list) or not all(
        isinstance(p, dict) and p.get("type") in TEXT_PART_TYPES and isinstance(p.get("text"), str)
        for p in parts
    ):
        return None
    return "".join(p["text"] for p in parts)


def messages_to_text(messages: tuple[Message, ...]) -> str:
    """Plain-text rendering used when no chat template applies.

    A single user turn is its content; a conversation is `User:` / `Assistant:` turns
    ending with an open `Assistant:` line.
    """
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = [f"{names[m.role]}: {m.content}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def grader_item(record) -> dict[str, Any]:
    """The dataset row a grader reads as `{{item.FIELD}}`: every field of the input row,
    with the prompt as `input_text` (its last user turn) and `messages`."""
    item = dict(record.extra)
    item.setdefault("input_text", record.messages[-1].content)
    item.setdefault("messages", [{"role": m.role, "content": m.content} for m in record.messages])
    return item
