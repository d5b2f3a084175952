"""`score_model`: a model scores the answer: a reward model, or an LLM judge.

- `model: reward_model:DIR`: a folder written by `rlhfkit train-reward`. `input` is the
  prompt conversation; the sample's answer is the response scored. The raw reward goes
  through a sigmoid, or with `range: [lo, hi]` is mapped linearly and clamped to [0, 1].
- `model: REFERENCE` (anything `rlhfkit.models.load_model` takes): a local chat model
  reads `input` (messages that show it the answer through `{{sample.output_text}}`) and
  writes a score.
- `base_url: URL` with `model: NAME` (and optionally `api_key_env`): the same judge over
  an OpenAI-compatible HTTP endpoint.

A judge's score is a JSON `{"score": x}` in its answer or else the first number in it,
mapped from `range` (default [0, 1]) to [0, 1]. A missing or out-of-range score and an
HTTP failure are recorded errors with reward 0.0. A model that cannot be loaded is a
setup problem and raises ModelLoadError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhfkit.data.records import TEXT_PART_TYPES, text_of_parts
from rlhfkit.errors import ModelLoadError
from rlhfkit.graders.base import Grader, GradingError, Item, Sample, Score
from rlhfkit.graders.fields import Fields
from rlhfkit.graders.model_backends import (
    Backend,
    Conversation,
    HttpJudge,
    LocalJudge,
    RewardModelBackend,
    SamplingParams,
)
from rlhfkit.graders.templates import Template

KEYS = ("input", "model", "base_url", "api_key_env", "range", "sampling_params", "timeout_seconds")
REWARD_MODEL_PREFIX = "reward_model:"
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
"""OpenAI's `sampling_params.reasoning_effort` values."""
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Message roles accepted; OpenAI's `developer` is sent as `system`."""


class ScoreModelGrader(Grader):
    """Render the conversation for each sample and let the backend score it.

    Args:
        name: the grader's name.
        input: (role, content template) messages.
        backend: the reward model or judge that scores.
    """

    type = "score_model"

    def __init__(self, name: str, input: list[tuple[str, Template]], backend: Backend):
        super().__init__(name)
        self.input = input
        self.backend = backend

    def score_batch(self, samples: Sequence[Sample], items: Sequence[Item]) -> list[Score]:
        rendered: list[Conversation | GradingError] = []
        for sample, item in zip(samples, items, strict=True):
            try:
                rendered.append([(role, t.render(sample, item)) for role, t in self.input])
            except GradingError as error:
                rendered.append(error)
        ok = [i for i, c in enumerate(rendered) if not isinstance(c, GradingError)]
        conversations, kept = [rendered[i] for i in ok], [samples[i] for i in ok]
        values = iter(self.backend.score(conversations, kept) if ok else [])
        outcomes = [c if isinstance(c, GradingError) else next(values) for c in rendered]
        return [self.failed(o) if isinstance(o, GradingError) else Score(o) for o in outcomes]


def build(fields: Fields, name: str) -> ScoreModelGrader | None:
    """A ScoreModelGrader from its mapping (None after a recorded problem)."""
    messages = _messages(fields)
    model = fields.text("model")
    span = fields.span("range")
    base_url = fields.text("base_url", None)
    if model is None:
        return None
    if model.startswith(REWARD_MODEL_PREFIX):
        backend = _reward_model_backend(fields, model[len(REWARD_MODEL_PREFIX) :], span)
    else:
        sampling = _sampling(fields)
        span = span or (0.0, 1.0)
        if base_url is not None:
            timeout = fields.number("timeout_seconds", 60.0, above=0)
            api_key_env = fields.text("api_key_env", None)
            backend = None
            if not base_url.startswith(("http://", "https://")):
                fields.problem("base_url", f"must be an http:// or https:// URL, got {base_url!r}")
            elif sampling is not None and timeout is not None:
                backend = HttpJudge(base_url, model, api_key_env, sampling, span, timeout)
        else:
            for key in ("api_key_env", "timeout_seconds"):
                if key in fields.config:
                    fields.problem(key, "only an HTTP judge (with base_url) takes it")
            backend = _local_judge(fields, model, sampling, span)
    if messages is None or backend is None:
        return None
    return ScoreModelGrader(name, messages, backend)


def _messages(fields: Fields) -> list[tuple[str, Template]] | None:
    value = fields.get("input")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        fields.problem("input", "must be a list of messages [{role: user, content: ...}]")
        return None
    messages: list[tuple[str, Template]] = []
    problems_before = len(fields.ctx.problems)
    for i, message in enumerate(value):
        key = f"input.{i}"
        if not isinstance(message, dict) or set(message) - {"role", "content", "type"}:
            fields.problem(key, f"must be a mapping with role and content, got {message!r:.100}")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            allowed = ", ".join(ROLES)
            fields.problem(f"{key}.role", f"{role!r} is not allowed; choose one of: {allowed}")
        if isinstance(content, list):
            content = _joined_parts(fields, f"{key}.content", content)
            if content is None:
                continue
        if not isinstance(content, str):
            fields.problem(f"{key}.content", "must be a string (a template) or text parts")
            continue
        template = fields.parse_template(f"{key}.content", content)
        if role in ROLES and template is not None:
            messages.append((ROLES[role], template))
    if len(fields.ctx.problems) > problems_before:
        return None
    if not any(role == "user" for role, _ in messages):
        fields.problem("input", "needs at least one user message")
        return None
    return messages


def _joined_parts(fields: Fields, at: str, parts: list[Any]) -> str | None:
    """A content list of text parts ([{type: input_text, text: ...}, ...]) as one template
    (`records.text_of_parts`), or None after a recorded problem."""
    text = text_of_parts(parts)
    if text is None:
        i, part = next((i, p) for i, p in enumerate(parts) if text_of_parts([p]) is None)
        fields.problem(
            f"{at}.{i}",
            f"{part!r:.80} is not a text part; local judges read "
            f"{{type: {' | '.join(TEXT_PART_TYPES)}, text: ...}} (no images or files)",
        )
    return text


def _sampling(fields: Fields) -> SamplingParams | None:
    value = fields.get("sampling_params", {})
    if not isinstance(value, dict):
        fields.problem("sampling_params", "must be a mapping")
        return None
    keys = ("temperature", "top_p", "max_completions_tokens", "seed", "reasoning_effort")
    sub = Fields(fields.ctx, value, fields.where("sampling_params"), keys, "sampling_params")
    temperature = sub.number("temperature", 0.0, at_least=0)
    top_p = sub.number("top_p", 1.0, above=0, at_most=1)
    max_tokens = sub.number("max_completions_tokens", 64, at_least=1, integer=True)
    seed = sub.number("seed", 0, integer=True) if "seed" in value else None
    effort = (
        sub.choice("reasoning_effort", REASONING_EFFORTS) if "reasoning_effort" in value else None
    )
    if "base_url" not in fields.config:
        sub.ignored("reasoning_effort", "a local judge does not reason; an HTTP judge gets it")
    if None in (temperature, top_p, max_tokens) or (seed is None and "seed" in value):
        return None
    if effort is None and "reasoning_effort" in value:
        return None
    return SamplingParams(
        float(temperature),
        float(top_p),
        int(max_tokens),
        None if seed is None else int(seed),
        effort,
    )


def _reward_model_backend(
    fields: Fields, folder_text: str, span: tuple[float, float] | None
) -> RewardModelBackend | None:
    from rlhfkit.models.scoring import check_reward_folder

    for key in ("base_url", "api_key_env", "sampling_params", "timeout_seconds"):
        if key in fields.config:
            fields.problem(key, "a reward_model: grader does not take it (only judges do)")
    folder = fields.ctx.path(folder_text)
    try:
        check_reward_folder(folder)
    except ModelLoadError as exc:
        fields.problem("model", str(exc))
        return None
    return RewardModelBackend(folder, span)


def _local_judge(
    fields: Fields, reference: str, sampling: SamplingParams | None, span: tuple[float, float]
) -> LocalJudge | None:
    if reference.startswith((".", "/", "~")):
        folder = fields.ctx.path(reference)
        if not (folder / "config.json").is_file():
            fields.problem("model", f"{folder} is not a model folder (no config.json)")
            return None
        reference = str(folder)
    return None if sampling is None else LocalJudge(reference, sampling, span)
