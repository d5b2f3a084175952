"""`rlhfkit sxs`: compare two models' answers side by side with an autorater.

`a` and `b` are prediction files over the same prompts (from `rlhfkit infer`), or models,
which are run on `prompt_dataset` first. Writes `judgments.jsonl` (one verdict per prompt)
and `metrics.json`: win and tie rates with 95% intervals, how many judge answers could not
be read, and, with `human_preference_column`, the autorater's agreement with the humans.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.config import check, param, to_dict
from rlhfkit.data.config import data_settings
from rlhfkit.data.formats import load_prompts
from rlhfkit.data.records import PromptRecord, grader_item
from rlhfkit.errors import ConfigError, DatasetError
from rlhfkit.eval.autoraters import (
    JudgeConfig,
    Judgment,
    Pair,
    judge_pairs,
    load_autorater,
)
from rlhfkit.eval.autosxs import autosxs_metrics, check_prompt_parameters, evaluation_rows
from rlhfkit.fileio import atomic_write_json, atomic_write_jsonl, check_output_path
from rlhfkit.stats import CHOICES, alignment_metrics, win_rates

logger = logging.getLogger(__name__)

JUDGMENTS_FILE = "judgments.jsonl"
JOURNAL_FILE = "judgments.partial"
"""Judgments made so far, kept while sxs runs so that a killed run continues."""
METRICS_FILE = "metrics.json"
PREDICTION_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


@dataclass
class SxSConfig(JudgeConfig):
    """Side-by-side comparison (`rlhfkit sxs`)."""

    a: str | None = param(
        None, "Model A: a prediction file (.jsonl) or a model / RL run directory to run first."
    )
    b: str | None = param(None, "Model B, like a; win rates are reported for both.")
    autorater: str | None = param(
        None,
        "reward_model:DIR, grader:FILE.yaml or judge:MODEL_OR_URL (an OpenAI-compatible "
        "base URL such as http://localhost:8000/v1, or a local model).",
    )
    out: str | None = param(None, "Output folder for judgments.jsonl and metrics.json.")
    prompt_dataset: str | None = param(
        None, "Prompts to run a and b on when they are models (not prediction files)."
    )
    response_column_a: str = param("prediction", "Column of a's file holding its answer.")
    response_column_b: str = param("prediction", "Column of b's file holding its answer.")
    human_preference_column: str | None = param(
        None, "Column (in a's or b's rows) with the human choice A, B or TIE; empty = unlabelled."
    )
    evaluation_dataset: str | None = param(
        None,
        "AutoSxS: one file whose rows hold both answers (response_column_a and _b), "
        "instead of a and b.",
    )
    id_columns: list[str] = param(
        [], "AutoSxS: fields that identify an evaluation_dataset row (the judgment's id)."
    )
    autorater_prompt_parameters: dict = param(
        {},
        "AutoSxS: the judge's prompt from an evaluation_dataset row: inference_instruction "
        "and inference_context, each {template: TEXT} or {column: NAME} (default: the row's "
        "own prompt field).",
    )
    batch_size: int = param(16, "Pairs judged (and prompts generated) together.")
    dtype: str = param("auto", "bf16, fp32 or auto.", choices=("auto", "bf16", "fp32"))
    device: str = param("auto", "cpu, cuda or auto.", choices=("auto", "cpu", "cuda"))

    def validate(self) -> None:
        super().validate()
        for name in ("autorater", "out"):
            check(bool(getattr(self, name)), name, getattr(self, name), "is required")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        if self.evaluation_dataset:
            if self.a or self.b:
                raise ConfigError(
                    "give evaluation_dataset (both answers in one file) or a and b, not both"
                )
            check_prompt_parameters(self.autorater_prompt_parameters)
            return
        for name in ("id_columns", "autorater_prompt_parameters"):
            if getattr(self, name):
                raise ConfigError(f"{name} describes evaluation_dataset rows; give that file")
        for name in ("a", "b"):
            check(bool(getattr(self, name)), name, getattr(self, name), "is required")
        needs_prompts = [s for s in (self.a, self.b) if not is_prediction_file(s)]
        if needs_prompts and not self.prompt_dataset:
            raise ConfigError(
                f"{' and '.join(needs_prompts)} is not a prediction file (.jsonl), so it is run "
                "as a model: give prompt_dataset=FILE to run it on, or pass a prediction file"
            )


@dataclass
class SxSResult:
    out: Path
    metrics: dict[str, Any]
    judgments: list[Judgment]


def is_prediction_file(value: str) -> bool:
    return str(value).endswith(PREDICTION_SUFFIXES)


def run_sxs(config: SxSConfig) -> SxSResult:
    """Answer with a and b if needed, pair the answers, judge them, write the results."""
    out = check_output_path(config.out, folder=True)
    columns = (config.response_column_a, config.response_column_b)
    if config.evaluation_dataset:  # AutoSxS: both answers in each row of one file
        file_a = Path(config.evaluation_dataset)
        rows = evaluation_rows(
            config.evaluation_dataset,
            config.autorater_prompt_parameters,
            config.id_columns,
            columns,
        ).records
        pairs = pair_records(rows, rows, *columns)
        names = [f"{file_a}:{column}" for column in columns]
    else:
        # step 1. prediction files (a model is run on the prompts first)
        file_a = _predictions(config, config.a, out / "predictions_a.jsonl")
        file_b = _predictions(config, config.b, out / "predictions_b.jsonl")
        # step 2. pair the answers by prompt
        pairs = pair_predictions(file_a, file_b, *columns)
        names = [str(config.a), str(config.b)]
    humans = human_labels(pairs, config.human_preference_column, file_a)
    # step 3. judge; judgments are kept as they are made, so a killed run continues
    ignored = ("a", "b", "out", "batch_size", "human_preference_column", "prompt_dataset")
    settings = {k: v for k, v in to_dict(config).items() if k not in ignored}
    rater = load_autorater(config.autorater, config)
    judgments = judge_pairs(rater, pairs, config.batch_size, out / JOURNAL_FILE, settings)
    # step 4. metrics and files
    metrics = sxs_metrics(judgments, humans)
    metrics["autorater"] = config.autorater
    retries = getattr(getattr(rater, "backend", None), "retries", None)
    if retries is not None:  # an HTTP judge: requests asked again after 429/5xx or timeouts
        metrics["judge_retries"] = retries
    metrics["a"], metrics["b"] = names
    metrics.update(autosxs_metrics(metrics, humans))  # Vertex AI AutoSxS's names as well
    for judgment, human in zip(judgments, humans, strict=True):
        if human is not None:
            judgment.extra["human_choice"] = human
    atomic_write_jsonl(out / JUDGMENTS_FILE, [j.to_row() for j in judgments])
    atomic_write_json(out / METRICS_FILE, metrics)
    atomic_write_json(out / "config.json", to_dict(config))
    (out / JOURNAL_FILE).unlink(missing_ok=True)
    return SxSResult(out, metrics, judgments)


def _predictions(config: SxSConfig, value: str, target: Path) -> Path:
    if is_prediction_file(value):
        if not Path(value).is_file():
            raise ConfigError(f"prediction file {value} does not exist")
        return Path(value)
    from rlhfkit.eval.infer import infer, load_infer_config

    # both models answer with this config's instruction and lengths: a fair comparison
    values = {
        **data_settings(config),
        "batch_size": config.batch_size,
        "dtype": config.dtype,
        "device": config.device,
        "model": value,
        "prompt_dataset": config.prompt_dataset,
        "out": str(target),
    }
    result = infer(load_infer_config(None, values))
    for line in result.dropped_rows:  # bad_rows=skip left prompts out: said, and listed
        logger.warning(line)
    return result.out


def pair_predictions(file_a: Path, file_b: Path, column_a: str, column_b: str) -> list[Pair]:
    """Pair the rows of two prediction files by prompt (in order when the order agrees)."""
    rows_a, rows_b = load_prompts(file_a).records, load_prompts(file_b).records
    problems = _missing_column(rows_a, column_a, "response_column_a") + _missing_column(
        rows_b, column_b, "response_column_b"
    )
    if problems:
        raise DatasetError(f"{len(problems)} prediction row(s) have no answer", problems)
    if [r.text for r in rows_a] == [r.text for r in rows_b]:
        matched = list(zip(rows_a, rows_b, strict=True))
    else:
        matched = _match_by_prompt(rows_a, rows_b, file_a, file_b)
    return pair_records([a for a, _ in matched], [b for _, b in matched], column_a, column_b)


def pair_records(
    rows_a: list[PromptRecord], rows_b: list[PromptRecord], column_a: str, column_b: str
) -> list[Pair]:
    """Pairs of the answers in `column_a` of `rows_a` and `column_b` of `rows_b`, row by row
    (each row's `id`, else its index, names the pair)."""
    matched = list(zip(rows_a, rows_b, strict=True))
    return [
        Pair(
            ra.extra.get("id", i),
            ra,
            ra.extra[column_a],
            rb.extra[column_b],
            grader_item(ra),
            grader_item(rb),
            _ended(ra, column_a),
            _ended(rb, column_b),
        )
        for i, (ra, rb) in enumerate(matched)
    ]


def _ended(record: PromptRecord, column: str) -> bool | None:
    """Whether the model ended the answer in `column` (`rlhfkit infer` writes
    `COLUMN_ended`); None where the file does not say."""
    value = record.extra.get(f"{column}_ended")
    return value if isinstance(value, bool) else None


def _missing_column(records: list[PromptRecord], column: str, option: str) -> list[str]:
    return [
        f"{r.source}: no string field {column!r} (set {option} to the answer's column)"
        for r in records
        if not isinstance(r.extra.get(column), str)
    ]


def _match_by_prompt(
    rows_a: list[PromptRecord], rows_b: list[PromptRecord], file_a: Path, file_b: Path
) -> list[tuple[PromptRecord, PromptRecord]]:
    by_prompt: dict[str, list[PromptRecord]] = {}
    for rb in rows_b:
        by_prompt.setdefault(rb.text, []).append(rb)
    matched, unmatched = [], []
    for ra in rows_a:
        candidates = by_prompt.get(ra.text)
        if candidates:
            matched.append((ra, candidates.pop(0)))
        else:
            unmatched.append(f"{ra.source}: no row of {file_b} has this prompt: {ra.text[:80]!r}")
    unmatched += [
        f"{rb.source}: no row of {file_a} has this prompt: {rb.text[:80]!r}"
        for left in by_prompt.values()
        for rb in left
    ]
    if unmatched:
        raise DatasetError(
            f"{file_a} and {file_b} are not predictions over the same prompts; "
            "run both models on the same prompt dataset",
            unmatched,
        )
    return matched


def human_labels(pairs: list[Pair], column: str | None, file_a: Path) -> list[str | None]:
    """The human choice of each pair (A, B or TIE; None when unlabelled or no column)."""
    if column is None:
        return [None] * len(pairs)
    labels, problems, found = [], [], False
    for pair in pairs:
        values = [
            row[column] for row in (pair.row_a, pair.row_b) if row.get(column) not in (None, "")
        ]
        found = found or column in pair.row_a or column in pair.row_b
        if not values:
            labels.append(None)
            continue
        label = str(values[0]).strip().upper()
        if label not in CHOICES or len({str(v).strip().upper() for v in values}) > 1:
            problems.append(
                f"{pair.record.source}: {column}={values[0]!r} (b's row: "
                f"{pair.row_b.get(column)!r}); use A, B or TIE, the same in both files"
            )
        labels.append(label)
    if not found:
        raise ConfigError(
            f"human_preference_column={column!r}: no row of {file_a} or of b's file has that field"
        )
    if problems:
        raise DatasetError(f"{len(problems)} row(s) have an invalid human preference", problems)
    return labels


def sxs_metrics(judgments: list[Judgment], humans: list[str | None]) -> dict[str, Any]:
    """Win rates over the judged pairs, counts of unreadable judge answers, and agreement
    with the human labels where both exist."""
    valid = [j for j in judgments if j.choice is not None]
    metrics: dict[str, Any] = win_rates([j.choice for j in valid])
    metrics["pairs"] = len(judgments)
    metrics["invalid_judgments"] = len(judgments) - len(valid)
    metrics["malformed_judge_outputs"] = sum(j.malformed for j in judgments)
    judged_twice = [j for j in judgments if j.votes is not None and None not in j.votes]
    if judged_twice:
        metrics["position_disagreements"] = sum(j.votes[0] != j.votes[1] for j in judged_twice)
    metrics["identical_pairs"] = sum(j.response_a == j.response_b for j in judgments)
    both = [(j.choice, h) for j, h in zip(judgments, humans, strict=True) if j.choice and h]
    if any(h is not None for h in humans):
        alignment = alignment_metrics([c for c, _ in both], [h for _, h in both])
        metrics["human_labelled"] = sum(h is not None for h in humans)
        metrics["human_compared"] = alignment.pop("n")
        metrics.update(alignment)
    return metrics
