"""Autoraters for side-by-side comparison: which of two answers to a prompt is better.

Chosen by the `autorater` value, in one place (`load_autorater`):
- `reward_model:DIR`: P(A better) = sigmoid(r_A - r_B) (Bradley-Terry); the choice is the
  likelier side and its confidence that probability. Equal rewards tie.
- `grader:FILE`: every answer is graded with its own prediction row as the item; the
  higher grade wins, equal grades tie; confidence 1.0 (a grader is deterministic).
- `judge:MODEL_OR_URL`: a pairwise LLM judge (`rlhfkit.eval.judge`), a local model or an
  OpenAI-compatible endpoint, asked in both orders.

Identical answers always tie with confidence 1.0, without asking the autorater.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlhfkit.config import check, param
from rlhfkit.data.config import DataConfig
from rlhfkit.data.records import PromptRecord
from rlhfkit.errors import ConfigError
from rlhfkit.fileio import Journal
from rlhfkit.graders.sandbox import resolve_mode, sandbox_param

logger = logging.getLogger(__name__)

KINDS = ("reward_model", "grader", "judge")


@dataclass
class JudgeConfig(DataConfig):
    """How a `judge:` autorater is asked (rlhfkit sxs, rlhfkit data synth)."""

    judge_model: str = param("default", "Model name sent to an HTTP judge endpoint.")
    judge_api_key_env: str | None = param(
        None, "Environment variable holding an HTTP judge's API key (sent as a Bearer token)."
    )
    judge_max_tokens: int = param(256, "Longest judge answer, in tokens.")
    judge_timeout_seconds: float = param(120.0, "Timeout of one HTTP judge request.")
    grader_sandbox: str | None = sandbox_param()

    def validate(self) -> None:
        super().validate()
        check(self.judge_max_tokens >= 1, "judge_max_tokens", self.judge_max_tokens, ">= 1")
        if self.grader_sandbox is not None:
            resolve_mode(self.grader_sandbox, "grader_sandbox")


@dataclass
class Pair:
    """Two answers to one prompt; `row_a`/`row_b` are the prediction rows (for graders);
    `ended_a`/`ended_b` whether the model ended each answer (None: not recorded)."""

    id: Any
    record: PromptRecord
    response_a: str
    response_b: str
    row_a: dict[str, Any]
    row_b: dict[str, Any]
    ended_a: bool | None = None
    ended_b: bool | None = None


@dataclass
class Judgment:
    """One side-by-side verdict (a line of judgments.jsonl).

    Attributes:
        choice: "A", "B", "TIE", or None when the autorater gave no readable answer.
        confidence: in [0, 1]; how each autorater defines it is in this module's docstring.
        score_a, score_b: the reward or grade of each answer (None for a judge).
        votes: a judge's choice in each order, mapped to the A/B frame.
        malformed: how many of the judge's answers could not be read (0, 1 or 2).
    """

    id: Any
    prompt: str
    response_a: str
    response_b: str
    choice: str | None
    confidence: float
    explanation: str
    score_a: float | None = None
    score_b: float | None = None
    votes: list[str | None] | None = None
    malformed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        row = {
            "id": self.id,
            "prompt": self.prompt,
            "response_a": self.response_a,
            "response_b": self.response_b,
            "choice": self.choice or "INVALID",
            "confidence": self.confidence,
            "explanation": self.explanation,
        }
        for key in ("score_a", "score_b", "votes"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        if self.malformed:
            row["malformed"] = self.malformed
        return {**row, **self.extra}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Judgment:
        """The judgment `to_row` wrote."""
        row = dict(row)
        fields = {
            name: row.pop(name)
            for name in ("id", "prompt", "response_a", "response_b", "confidence", "explanation")
        }
        choice = row.pop("choice")
        optional = {name: row.pop(name) for name in ("score_a", "score_b", "votes") if name in row}
        return cls(
            **fields,
            choice=None if choice == "INVALID" else choice,
            malformed=row.pop("malformed", 0),
            extra=row,
            **optional,
        )


class Autorater(Protocol):
    name: str

    def judge(self, pairs: list[Pair]) -> list[Judgment]:
        """One judgment per pair, in order."""


def _judgment(
    pair: Pair, choice: str | None, confidence: float, explanation: str, **kw
) -> Judgment:
    ended = {
        f"ended_{side}": value
        for side, value in (("a", pair.ended_a), ("b", pair.ended_b))
        if value is not None
    }
    return Judgment(
        pair.id,
        pair.record.text,
        pair.response_a,
        pair.response_b,
        choice,
        confidence,
        explanation,
        **kw,
        extra=ended,
    )


class RewardModelRater:
    """P(A better) = sigmoid(r_A - r_B) from a reward model trained by `train-reward`."""

    def __init__(self, folder: str):
        from rlhfkit.models.scoring import RewardTextScorer

        self.name = f"reward_model:{folder}"
        self.scorer = RewardTextScorer.load(folder)

    def judge(self, pairs: list[Pair]) -> list[Judgment]:
        rewards = self.scorer.score(
            [p.record.messages for p in pairs],
            [[p.response_a, p.response_b] for p in pairs],
        )
        out = []
        for pair, (r_a, r_b) in zip(pairs, rewards, strict=True):
            p_a = 0.5 * (1.0 + math.tanh((r_a - r_b) / 2))  # sigmoid, without overflow
            choice = "A" if r_a > r_b else "B" if r_b > r_a else "TIE"
            explanation = f"reward A {r_a:.4f}, reward B {r_b:.4f}: P(A better) = {p_a:.4f}"
            out.append(
                _judgment(pair, choice, max(p_a, 1 - p_a), explanation, score_a=r_a, score_b=r_b)
            )
        return out


class GraderRater:
    """Grade each answer with a grader file; the higher grade wins."""

    def __init__(self, path: str, sandbox: str | None = None):
        from rlhfkit.graders import load_grader

        self.name = f"grader:{path}"
        self.grader = load_grader(path, sandbox=sandbox)

    def judge(self, pairs: list[Pair]) -> list[Judgment]:
        samples = [r for p in pairs for r in (p.response_a, p.response_b)]
        items = [row for p in pairs for row in (p.row_a, p.row_b)]
        grades = self.grader.grade_batch(samples, items)
        out = []
        for i, pair in enumerate(pairs):
            g_a, g_b = grades[2 * i], grades[2 * i + 1]
            choice = "A" if g_a.reward > g_b.reward else "B" if g_b.reward > g_a.reward else "TIE"
            notes = [f"grade A {g_a.reward:.4f}, grade B {g_b.reward:.4f}"]
            for side, grade in (("A", g_a), ("B", g_b)):
                notes += [f"{side}: {e.get('kind')}: {e.get('message')}" for e in grade.errors]
            out.append(
                _judgment(
                    pair, choice, 1.0, "; ".join(notes), score_a=g_a.reward, score_b=g_b.reward
                )
            )
        return out

    def close(self) -> None:
        self.grader.close()


class PairwiseJudgeRater:
    """An LLM judge asked "A or B?" in both orders (see `rlhfkit.eval.judge`)."""

    def __init__(self, target: str, config: JudgeConfig):
        from rlhfkit.graders.model_backends import HttpJudge, LocalJudge, SamplingParams

        self.name = f"judge:{target}"
        self.instruction = config.instruction
        sampling = SamplingParams(max_completions_tokens=config.judge_max_tokens)
        if target.startswith(("http://", "https://")):
            self.backend = HttpJudge(
                target,
                config.judge_model,
                config.judge_api_key_env,
                sampling,
                (0, 1),
                config.judge_timeout_seconds,
            )
        else:
            self.backend = LocalJudge(target, sampling, (0, 1))

    def judge(self, pairs: list[Pair]) -> list[Judgment]:
        from rlhfkit.eval.judge import combine_votes, judge_messages, parse_vote

        conversations = []
        for p in pairs:
            text = p.record.text
            conversations.append(judge_messages(text, p.response_a, p.response_b, self.instruction))
            conversations.append(judge_messages(text, p.response_b, p.response_a, self.instruction))
        answers = self.backend.complete_batch(conversations)
        out = []
        for i, pair in enumerate(pairs):
            verdict = combine_votes(parse_vote(answers[2 * i]), parse_vote(answers[2 * i + 1]))
            out.append(
                _judgment(
                    pair,
                    verdict.choice,
                    verdict.confidence,
                    verdict.explanation,
                    votes=list(verdict.votes),
                    malformed=verdict.malformed,
                )
            )
        return out


def load_autorater(spec: str, judge: JudgeConfig | None = None) -> Autorater:
    """The autorater named by `spec` (`KIND:TARGET`); a ConfigError for anything else.
    A `judge:` autorater is asked as `judge` says (its judge_* fields and instruction)."""
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS or not target:
        raise ConfigError(
            f"autorater={spec!r} is invalid: write reward_model:DIR, grader:FILE.yaml or "
            "judge:MODEL_OR_URL"
        )
    if kind == "reward_model":
        if not Path(target).is_dir():
            raise ConfigError(
                f"autorater={spec!r}: {target} is not a folder; give the reward_model folder "
                "written by rlhfkit train-reward"
            )
        return RewardModelRater(target)
    judge = judge or JudgeConfig()
    if kind == "grader":
        return GraderRater(target, judge.grader_sandbox)
    return PairwiseJudgeRater(target, judge)


def judge_pairs(
    rater: Autorater,
    pairs: list[Pair],
    batch_size: int,
    journal_path: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    desc: str = "sxs",
) -> list[Judgment]:
    """Judge pairs in batches with a progress bar, then close the rater. Identical answers
    tie without asking the rater.

    Args:
        journal_path: where judgments are kept as they are made; a killed run started again
            with the same `settings` (the autorater's) and pairs takes them from there
            instead of asking again.
        settings: what the judgments depend on besides the pairs.
    """
    from rlhfkit.progress import progress_bar

    journal = None
    done: dict[int, Judgment] = {}
    if journal_path is not None:
        journal = Journal(journal_path, _fingerprint(settings or {}, pairs))
        done = {i: Judgment.from_row(row) for i, row in journal.open().items()}
    if done:
        logger.info("%s: continuing, %d of %d pairs already judged", desc, len(done), len(pairs))
    logger.info("%s: %d pairs judged by %s", desc, len(pairs), rater.name)
    out: list[Judgment | None] = [None] * len(pairs)
    todo = []
    for i, pair in enumerate(pairs):
        if i in done:
            out[i] = done[i]
        elif pair.response_a == pair.response_b:
            out[i] = _judgment(pair, "TIE", 1.0, "the two answers are identical")
        else:
            todo.append(i)
    bar = progress_bar(len(pairs), len(pairs) - len(todo), desc, unit="pair")
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            judged = list(zip(batch, rater.judge([pairs[i] for i in batch]), strict=True))
            for i, judgment in judged:
                out[i] = judgment
            if journal is not None:
                journal.append((i, judgment.to_row()) for i, judgment in judged)
            bar.update(len(batch))
    finally:
        bar.close()
        if hasattr(rater, "close"):
            rater.close()
    return out  # type: ignore[return-value]


def _fingerprint(settings: dict[str, Any], pairs: list[Pair]) -> str:
    """A hash of what judgments depend on: the autorater's settings and the pairs."""
    content = [[str(p.id), p.record.text, p.response_a, p.response_b] for p in pairs]
    text = json.dumps([settings, content], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
