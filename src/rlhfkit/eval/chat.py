"""A model that answers chat messages, token by token: what `rlhfkit chat` (a terminal
conversation) and `rlhfkit serve` (an OpenAI-compatible endpoint) talk to.

The model is any `rlhfkit infer` model: a reference, a Hugging Face folder, a LoRA adapter
or an RL/DPO run directory (its merged model, else its adapter on the run's base). The
messages are rendered by the tokenizer's chat template with the generation prompt; no
instruction is added (the caller's messages are the whole prompt).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import torch
from transformers import StoppingCriteria

from rlhfkit import seeding
from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import Message
from rlhfkit.errors import ConfigError

ROLES = ("system", "user", "assistant")
PROMPT_TOKENS = 4096
"""Longest prompt kept (its oldest turns' longest parts are cut first; see PromptEncoder)."""


@dataclass(frozen=True)
class Sampling:
    """How an answer is generated. temperature 0: greedy."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        for ok, name, value, rule in (
            (self.max_tokens >= 1, "max_tokens", self.max_tokens, "at least 1"),
            (self.temperature >= 0, "temperature", self.temperature, "at least 0"),
            (0 < self.top_p <= 1, "top_p", self.top_p, "in (0, 1]"),
        ):
            if not ok:
                raise ConfigError(f"{name}={value!r}: must be {rule}")


@dataclass
class Answer:
    """A finished answer: its text, why it stopped (`stop`: the model ended it, `length`:
    max_tokens reached) and its token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class ChatModel:
    """One loaded model; one answer is generated at a time (a lock), streamed or whole."""

    def __init__(self, reference: str, dtype: str = "auto", device: str = "auto"):
        from rlhfkit.eval.infer import load_for_inference, resolve_model
        from rlhfkit.models.loading import DEFAULT_MODEL, load_tokenizer

        resolved = resolve_model(reference, DEFAULT_MODEL)
        self.name = reference
        self.tokenizer = load_tokenizer(resolved.weights)
        self.model = load_for_inference(resolved, dtype, device)
        self.encoder = PromptEncoder(self.tokenizer, prompt_sequence_length=PROMPT_TOKENS)
        self._lock = threading.Lock()

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        if not any(m.role == "user" for m in messages):
            raise ConfigError("messages need at least one user message")
        return self.encoder.encode_prompt(tuple(messages)).ids

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[str | Answer]:
        """The answer to the prompt `ids` (`prompt_ids`): its text pieces as they are
        generated, then its `Answer`. A caller that stops reading (a client gone) stops the
        generation before the next answer starts."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        counted: dict[str, torch.Tensor] = {}
        stop = threading.Event()
        settings = {
            "input_ids": torch.tensor([ids], device=self.model.device),
            "attention_mask": torch.ones((1, len(ids)), dtype=torch.long, device=self.model.device),
            "max_new_tokens": sampling.max_tokens,
            "do_sample": sampling.temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Stop(stop)]),
        }
        if sampling.temperature > 0:
            settings.update(temperature=sampling.temperature, top_p=sampling.top_p)
        with self._lock:
            args = (settings, sampling.seed, counted)
            worker = threading.Thread(target=self._generate, args=args, daemon=True)
            worker.start()
            pieces = []
            try:
                for piece in streamer:
                    if piece:
                        pieces.append(piece)
                        yield piece
            finally:  # also when the caller stops reading: generation ends, then the lock
                stop.set()
                worker.join()
        if "error" in counted:
            raise counted["error"]
        new = counted["tokens"][0, len(ids) :]
        ended = bool((new == self.tokenizer.eos_token_id).any())
        yield Answer("".join(pieces), "stop" if ended else "length", len(ids), len(new))

    def complete(self, ids: list[int], sampling: Sampling) -> Answer:
        """The whole answer to the prompt `ids` at once."""
        *_, answer = self.stream(ids, sampling)
        assert isinstance(answer, Answer)
        return answer

    @torch.no_grad()
    def _generate(self, settings: dict, seed: int | None, out: dict) -> None:
        try:
            with seeding.seeded(seed, self.model.device):  # a seed seeds this answer alone
                out["tokens"] = self.model.generate(**settings).cpu()
        except Exception as exc:  # handed to the caller's thread, which raises it
            out["error"] = exc
            settings["streamer"].end()


class _Stop(StoppingCriteria):
    """Stops generating once `event` is set (the reader went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        size, device = input_ids.shape[0], input_ids.device
        return torch.full((size,), self.event.is_set(), dtype=torch.bool, device=device)


def converse(
    chat: ChatModel,
    sampling: Sampling,
    system: str | None = None,
    read: TextIO = sys.stdin,
    write: TextIO = sys.stdout,
) -> int:
    """`rlhfkit chat`: a conversation in the terminal, the answer printed as it is written.
    `/reset` starts over, `/exit` (or end of input) stops."""
    start = [Message("system", system)] if system else []
    messages = list(start)
    write.write(f"chat with {chat.name}: /reset starts over, /exit or Ctrl-D stops\n")
    while True:
        write.write("> ")
        write.flush()
        line = read.readline()
        if not line or line.strip() == "/exit":
            write.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            messages = list(start)
            write.write("(new conversation)\n")
            continue
        messages.append(Message("user", text))
        answer = None
        for piece in chat.stream(chat.prompt_ids(messages), sampling):
            if isinstance(piece, Answer):
                answer = piece
            else:
                write.write(piece)
                write.flush()
        assert answer is not None
        cut = " [cut at max tokens]" if answer.finish_reason == "length" else ""
        write.write(f"{cut}\n")
        messages.append(Message("assistant", answer.text.strip()))
