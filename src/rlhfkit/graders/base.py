"""The grader protocol: a sampled answer and its dataset row in, a reward out.

One protocol serves RL training rewards and evaluation. A grader never raises on a bad
sample: a template naming a missing field, a crash in user code, a timeout or an
unparsable judge answer becomes a recorded error in `GradeResult.errors` and a reward of
0.0 for that sample, so a training run goes on. One error keeps a reward: a python grader's
value outside [0, 1] is recorded as `python_out_of_range` and clamped into [0, 1].
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

Item = Mapping[str, Any]
"""A dataset row, as read from the prompt file (every field, including extra ones)."""

# Kinds of recorded errors (after the flags of OpenAI's grader run endpoint).
INVALID_VARIABLE = "invalid_variable"  # a template names a field the item does not have
SAMPLE_PARSE = "sample_parse"  # {{sample.output_json...}} but the answer is not JSON
FORMULA_MATH = "formula_math"  # division by zero, log of a negative number, overflow
PYTHON_RUNTIME = "python_runtime"  # the user's grade() raised
PYTHON_TIMEOUT = "python_timeout"  # grade() ran past timeout_seconds
PYTHON_INVALID_VALUE = "python_invalid_value"  # grade() returned a non-number, NaN or inf
PYTHON_OUT_OF_RANGE = "python_out_of_range"  # grade() returned a number outside [0, 1]
PYTHON_WORKER = "python_worker"  # the worker process died or could not load the code
MODEL_PARSE = "model_parse"  # no score could be read from the judge's answer
MODEL_SERVER = "model_server"  # the judge endpoint failed (HTTP error, timeout, bad JSON)


class GradingError(Exception):
    """A problem with one sample, recorded in the result instead of raised to the caller.

    Args:
        kind: one of the kinds above.
        message: what went wrong, for a person.
        reward: the sample's reward despite the error: 0.0, except for a value clamped into
            [0, 1] (`python_out_of_range`).
        details: extra fields for the error entry (`type`, `traceback`, `output`...).
    """

    def __init__(self, kind: str, message: str, reward: float = 0.0, **details: Any):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reward = reward
        self.details = details


@dataclass(frozen=True)
class Sample:
    """One sampled answer.

    Attributes:
        output_text: the answer as text.
    """

    output_text: str

    @cached_property
    def output_json(self) -> Any:
        """The answer parsed as JSON; a `sample_parse` GradingError when it is not JSON."""
        try:
            return json.loads(self.output_text)
        except ValueError as exc:
            raise GradingError(
                SAMPLE_PARSE, f"the answer is not valid JSON ({exc}); cannot read output_json"
            ) from None

    def as_dict(self) -> dict[str, Any]:
        """`{"output_text", "output_json"}` (output_json None when the answer is not JSON)."""
        try:
            parsed = self.output_json
        except GradingError:
            parsed = None
        return {"output_text": self.output_text, "output_json": parsed}


def as_sample(sample: Sample | str) -> Sample:
    return sample if isinstance(sample, Sample) else Sample(sample)


@dataclass
class Score:
    """What a grader computes for one sample, before timing is added."""

    reward: float
    errors: list[dict[str, Any]] = field(default_factory=list)
    sub_rewards: dict[str, float] = field(default_factory=dict)


@dataclass
class GradeResult:
    """The outcome of grading one sample (the shape OpenAI's grader run endpoint answers).

    Attributes:
        reward: the reward, in [0, 1] for every type but `multi`, whose formula decides;
            0.0 when an error was recorded, except `python_out_of_range`, which keeps the
            value clamped into [0, 1].
        sub_rewards: the reward of each named sub-grader of a `multi` grader.
        errors: recorded errors, each `{"grader", "kind", "message"}` plus details such
            as `type` and `traceback`.
        execution_time: seconds spent on this sample; a batch's time is shared equally.
    """

    reward: float
    sub_rewards: dict[str, float]
    errors: list[dict[str, Any]]
    execution_time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "sub_rewards": dict(self.sub_rewards),
            "errors": list(self.errors),
            "execution_time": self.execution_time,
        }


class Grader(ABC):
    """Base class of every grader type.

    Subclasses implement `score_batch`; `grade` and `grade_batch` add timing. Graders that
    hold resources (a worker process) release them in `close`; a grader is also a
    context manager.
    """

    type: ClassVar[str]

    def __init__(self, name: str):
        self.name = name

    def grade(self, sample: Sample | str, item: Item) -> GradeResult:
        """Grade one answer against its dataset row."""
        return self.grade_batch([sample], [item])[0]

    def grade_batch(
        self, samples: Sequence[Sample | str], items: Sequence[Item]
    ) -> list[GradeResult]:
        """Grade answers against their rows (`samples[i]` goes with `items[i]`).

        Batches where it pays (embeddings, reward models, a local judge).
        """
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items; give one item each")
        if not samples:
            return []
        start = time.perf_counter()
        scores = self.score_batch([as_sample(s) for s in samples], items)
        share = (time.perf_counter() - start) / len(samples)
        return [GradeResult(s.reward, s.sub_rewards, s.errors, share) for s in scores]

    @abstractmethod
    def score_batch(self, samples: Sequence[Sample], items: Sequence[Item]) -> list[Score]:
        """One Score per sample; GradingErrors are caught per sample and recorded."""

    def error_entry(self, error: GradingError) -> dict[str, Any]:
        """The recorded form of a GradingError raised while this grader ran."""
        return {"grader": self.name, "kind": error.kind, "message": error.message, **error.details}

    def failed(self, error: GradingError) -> Score:
        """The error's reward (0.0 for every kind but `python_out_of_range`), error recorded."""
        return Score(error.reward, [self.error_entry(error)])

    def close(self) -> None:  # noqa: B027 (most graders hold nothing to release)
        """Release resources (worker processes); the default holds none."""

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PerSampleGrader(Grader):
    """A grader that scores each sample on its own with `score_one`."""

    def score_batch(self, samples: Sequence[Sample], items: Sequence[Item]) -> list[Score]:
        scores = []
        for sample, item in zip(samples, items, strict=True):
            try:
                scores.append(Score(self.score_one(sample, item)))
            except GradingError as error:
                scores.append(self.failed(error))
        return scores

    @abstractmethod
    def score_one(self, sample: Sample, item: Item) -> float:
        """The reward of one sample; raise GradingError for a recorded error."""
