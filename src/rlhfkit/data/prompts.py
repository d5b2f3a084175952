"""Turn records into token ids: instruction, chat template, counted truncation.

The rlhf_pipeline `instruction` is prepended (followed by a blank line) to the last user
turn of every prompt. When the tokenizer has a chat template and `use_chat_template` is
on, the conversation goes through it with the generation prompt appended; otherwise the
plain-text rendering of `records.messages_to_text` is used.

Truncation is never silent: a prompt longer than `prompt_sequence_length` tokens is cut
inside its longest message (so the template, the instruction and the final turn marker
survive) and counted; a response longer than `target_sequence_length` is cut at its end
and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.data.records import Message, messages_to_text


@dataclass
class TruncationCounts:
    """How many prompts and responses were cut to fit the sequence lengths."""

    prompts: int = 0
    responses: int = 0
    prompts_seen: int = 0
    responses_seen: int = 0

    def summary(self, prompt_limit: int, response_limit: int) -> str:
        return (
            f"{self.prompts}/{self.prompts_seen} prompts cut to prompt_sequence_length="
            f"{prompt_limit} tokens; {self.responses}/{self.responses_seen} responses cut to "
            f"target_sequence_length={response_limit} tokens"
        )


@dataclass
class EncodedText:
    """Token ids after truncation, with the length before it.

    Attributes:
        ids: token ids, at most the limit. Shape: (L,)
        full_length: number of tokens before truncation.
    """

    ids: list[int]
    full_length: int

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)


@dataclass
class PromptEncoder:
    """Render and encode prompts and responses for one tokenizer and one set of limits."""

    tokenizer: object
    instruction: str | None = None
    prompt_sequence_length: int = 512
    target_sequence_length: int = 64
    use_chat_template: bool = True
    counts: TruncationCounts = field(default_factory=TruncationCounts)

    @classmethod
    def from_settings(cls, tokenizer: object, settings: object) -> PromptEncoder:
        """An encoder from any object with the four encoding fields (a DataConfig, a spec)."""
        return cls(
            tokenizer,
            instruction=settings.instruction,
            prompt_sequence_length=settings.prompt_sequence_length,
            target_sequence_length=settings.target_sequence_length,
            use_chat_template=settings.use_chat_template,
        )

    @property
    def templated(self) -> bool:
        return self.use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def with_instruction(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        """Prepend the instruction to the last user turn (unchanged when there is none)."""
        if not self.instruction:
            return messages
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        turn = messages[last_user]
        updated = Message(turn.role, f"{self.instruction}\n\n{turn.content}")
        return (*messages[:last_user], updated, *messages[last_user + 1 :])

    def render(self, messages: tuple[Message, ...]) -> str:
        """The prompt text the model sees (instruction and template applied)."""
        return self._render(self.with_instruction(messages))

    def _render(self, messages: tuple[Message, ...]) -> str:
        if self.templated:
            chat = [{"role": m.role, "content": m.content} for m in messages]
            return self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        return messages_to_text(messages)

    def _ids(self, messages: tuple[Message, ...]) -> list[int]:
        text = self._render(messages)
        return self.tokenizer(text, add_special_tokens=not self.templated)["input_ids"]

    def encode_prompt(self, messages: tuple[Message, ...]) -> EncodedText:
        """Encode a prompt, shortening its longest message when it is over the limit."""
        limit = self.prompt_sequence_length
        messages = self.with_instruction(messages)
        ids = self._ids(messages)
        full_length = len(ids)
        self.counts.prompts_seen += 1
        if full_length <= limit:
            return EncodedText(ids, full_length)
        self.counts.prompts += 1
        for _ in range(4):  # re-encoding a cut text can shift a token or two: retry
            longest = max(range(len(messages)), key=lambda i: len(messages[i].content))
            turn = messages[longest]
            content_ids = self.tokenizer(turn.content, add_special_tokens=False)["input_ids"]
            keep = max(0, len(content_ids) - (len(ids) - limit) - 1)
            shorter = self.tokenizer.decode(content_ids[:keep])
            messages = (*messages[:longest], Message(turn.role, shorter), *messages[longest + 1 :])
            ids = self._ids(messages)
            if len(ids) <= limit:
                break
        if len(ids) > limit:  # the template alone is over the limit: keep its end
            ids = ids[-limit:]
        return EncodedText(ids, full_length)

    def encode_response(self, text: str, add_eos: bool = True) -> EncodedText:
        """Encode a response (the end-of-sequence token appended), cut at the limit."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if add_eos and eos is not None:
            ids = [*ids, eos]
        self.counts.responses_seen += 1
        limit = self.target_sequence_length
        if len(ids) <= limit:
            return EncodedText(ids, len(ids))
        self.counts.responses += 1
        return EncodedText(ids[:limit], len(ids))
