"""The models behind `score_model` graders: a reward model, a local judge, an HTTP judge.

Each backend turns rendered conversations (and the answers) into one float or one
GradingError per sample. Judges answer in text; `judge_score` reads the score from it.
Models are loaded once per process and run in batches.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from rlhfkit.graders.base import MODEL_PARSE, MODEL_SERVER, GradingError, Sample

Conversation = list[tuple[str, str]]
"""Chat messages as (role, content) pairs, templates already rendered."""

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SCORE_OBJECT = re.compile(r"\{[^{}]*\"score\"[^{}]*\}")
LOCAL_BATCH_SIZE = 16
JUDGE_PROMPT_TOKENS = 2048
"""A local judge's prompt is cut (counted, inside its longest message) at this length."""
MAX_CONCURRENT_REQUESTS = 8
"""HTTP requests in flight at once for a batch."""
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP answers worth asking again (rate limits, overloaded or restarting servers)."""
MAX_RETRIES = 4
RETRY_BASE_SECONDS = 1.0
"""The first retry waits this long, each next one twice as long (a server's Retry-After
wins when it asks for longer), never more than RETRY_CAP_SECONDS."""
RETRY_CAP_SECONDS = 30.0


class Backend(Protocol):
    def score(
        self, conversations: list[Conversation], samples: list[Sample]
    ) -> list[float | GradingError]:
        """One reward in [0, 1] (or a GradingError) per conversation."""


@dataclass(frozen=True)
class SamplingParams:
    """How a judge samples its answer (OpenAI's `sampling_params` names).

    Attributes:
        temperature: 0 answers greedily.
        top_p: nucleus sampling mass.
        max_completions_tokens: longest answer, in tokens.
        seed: seeds the judge's sampling (None: not seeded).
        reasoning_effort: sent to an HTTP judge as is; a local judge does not reason.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_completions_tokens: int = 64
    seed: int | None = None
    reasoning_effort: str | None = None


def judge_score(text: str, span: tuple[float, float]) -> float:
    """The score in a judge's answer, mapped from `span` = [lo, hi] to [0, 1].

    A JSON object with a `score` (alone or inside other text) wins; otherwise the first
    number in the text. A GradingError when there is none or it is outside [lo, hi].
    """
    score = None
    for candidate in (text.strip(), *_SCORE_OBJECT.findall(text)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        value = parsed.get("score") if isinstance(parsed, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            score = float(value)
            break
    if score is None:
        match = _NUMBER.search(text)
        if match is None:
            raise GradingError(MODEL_PARSE, f"no score in the judge's answer: {text[:300]!r}")
        score = float(match.group())
    lo, hi = span
    if not (math.isfinite(score) and lo <= score <= hi):
        raise GradingError(
            MODEL_PARSE, f"the judge's score {score:g} is outside range [{lo:g}, {hi:g}]"
        )
    return (score - lo) / (hi - lo)


class RewardModelBackend:
    """A reward-model folder from `rlhfkit train-reward`; the answer is the response.

    The raw reward r becomes sigmoid(r), or with `span` = [lo, hi] the clamped
    (r - lo) / (hi - lo).
    """

    def __init__(self, folder: Path, span: tuple[float, float] | None):
        self.folder = folder
        self.span = span

    def score(
        self, conversations: list[Conversation], samples: list[Sample]
    ) -> list[float | GradingError]:
        from rlhfkit.data.records import Message

        prompts = [tuple(Message(role, content) for role, content in c) for c in conversations]
        rewards = _reward_scorer(str(self.folder)).score(
            prompts, [[s.output_text] for s in samples]
        )
        return [self._unit(r) for (r,) in rewards]

    def _unit(self, reward: float) -> float:
        if self.span is None:
            return 0.5 * (1.0 + math.tanh(reward / 2))  # sigmoid, without overflow
        lo, hi = self.span
        return min(1.0, max(0.0, (reward - lo) / (hi - lo)))


@lru_cache(maxsize=2)
def _reward_scorer(folder: str):
    from rlhfkit.models.scoring import RewardTextScorer

    return RewardTextScorer.load(folder)


class LocalJudge:
    """A local chat model (any `rlhfkit.models.load_model` reference) that writes a score."""

    def __init__(self, reference: str, sampling: SamplingParams, span: tuple[float, float]):
        self.reference = reference
        self.sampling = sampling
        self.span = span

    def score(
        self, conversations: list[Conversation], samples: list[Sample]
    ) -> list[float | GradingError]:
        return [_parsed(answer, self.span) for answer in self.complete_batch(conversations)]

    def complete_batch(self, conversations: list[Conversation]) -> list[str]:
        """The judge's answer text for each conversation (generated in batches)."""
        from rlhfkit import seeding
        from rlhfkit.data.prompts import PromptEncoder
        from rlhfkit.data.records import Message

        tokenizer, model = _judge_model(self.reference)
        encoder = PromptEncoder(tokenizer, prompt_sequence_length=JUDGE_PROMPT_TOKENS)
        prompts = [
            encoder.encode_prompt(tuple(Message(role, content) for role, content in c)).ids
            for c in conversations
        ]
        answers: list[str] = []
        with seeding.seeded(self.sampling.seed, model.device):  # a seed seeds this batch alone
            for start in range(0, len(prompts), LOCAL_BATCH_SIZE):
                answers += self._generate(
                    model, tokenizer, prompts[start : start + LOCAL_BATCH_SIZE]
                )
        return answers

    def _generate(self, model, tokenizer, prompts: list[list[int]]) -> list[str]:
        from rlhfkit.models.generate import generate_text

        return generate_text(
            model,
            tokenizer,
            prompts,
            max_new_tokens=self.sampling.max_completions_tokens,
            do_sample=self.sampling.temperature > 0,
            temperature=self.sampling.temperature or 1.0,
            top_p=self.sampling.top_p,
        )


@lru_cache(maxsize=2)
def _judge_model(reference: str):
    from rlhfkit.models.loading import load_model, load_tokenizer

    return load_tokenizer(reference), load_model(reference)


class HttpJudge:
    """An OpenAI-compatible endpoint: POST {base_url}/chat/completions (urllib, no SDK).

    The request carries `model`, `messages`, `temperature`, `top_p` and `max_tokens` (the
    name local servers such as vLLM and llama.cpp accept). With `api_key_env`, the key is
    read from that environment variable and sent as a Bearer token. A rate limit or server
    error (RETRY_STATUSES) or a timeout is asked again up to MAX_RETRIES times with
    exponential backoff; `retries` counts the repeats over the judge's life.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None,
        sampling: SamplingParams,
        span: tuple[float, float],
        timeout_seconds: float,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.sampling = sampling
        self.span = span
        self.timeout_seconds = timeout_seconds
        self.retries = 0
        self._lock = threading.Lock()

    def score(
        self, conversations: list[Conversation], samples: list[Sample]
    ) -> list[float | GradingError]:
        return [
            answer if isinstance(answer, GradingError) else _parsed(answer, self.span)
            for answer in self.complete_batch(conversations)
        ]

    def complete_batch(self, conversations: list[Conversation]) -> list[str | GradingError]:
        """The answer text for each conversation, or the transport error (requests run
        `MAX_CONCURRENT_REQUESTS` at a time)."""
        workers = min(MAX_CONCURRENT_REQUESTS, len(conversations))
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            return list(pool.map(self._complete_or_error, conversations))

    def _complete_or_error(self, conversation: Conversation) -> str | GradingError:
        try:
            return self.complete(conversation)
        except GradingError as error:
            return error

    def complete(self, conversation: Conversation) -> str:
        """The judge's answer text; GradingError(model_server) for any transport problem."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise GradingError(
                    MODEL_SERVER, f"api_key_env names {self.api_key_env}, which is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.model,
            "messages": [{"role": role, "content": content} for role, content in conversation],
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_completions_tokens,
        }
        for key in ("seed", "reasoning_effort"):  # OpenAI's names; sent only when given
            if getattr(self.sampling, key) is not None:
                body[key] = getattr(self.sampling, key)
        raw = self._post(json.dumps(body).encode(), headers)
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise GradingError(
                MODEL_SERVER,
                f"{self.url} answered without a text choices[0].message.content: {raw[:300]!r}",
            )
        return content

    def _post(self, data: bytes, headers: dict[str, str]) -> bytes:
        """The response body; retried on RETRY_STATUSES and timeouts, GradingError when
        every try failed or the failure is not worth repeating."""
        for attempt in range(MAX_RETRIES + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            wait = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")[:300]
                problem = f"HTTP {exc.code} from {self.url}: {text}"
                if exc.code not in RETRY_STATUSES:
                    raise GradingError(MODEL_SERVER, problem) from None
                wait = _retry_after(exc.headers.get("Retry-After"))
            except TimeoutError:
                problem = f"no answer from {self.url} within {self.timeout_seconds:g} s"
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if not isinstance(reason, TimeoutError):
                    raise GradingError(MODEL_SERVER, f"cannot reach {self.url}: {reason}") from None
                problem = f"no answer from {self.url} within {self.timeout_seconds:g} s"
            if attempt == MAX_RETRIES:
                break
            backoff = RETRY_BASE_SECONDS * 2**attempt
            time.sleep(min(RETRY_CAP_SECONDS, max(backoff, wait or 0.0)))
            with self._lock:
                self.retries += 1
        raise GradingError(MODEL_SERVER, f"{problem} (asked {MAX_RETRIES + 1} times)")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (an HTTP date is not read)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _parsed(answer: str, span: tuple[float, float]) -> float | GradingError:
    try:
        return judge_score(answer, span)
    except GradingError as error:
        return error
