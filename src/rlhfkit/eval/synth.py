"""`rlhfkit data synth`: a preference dataset from AI feedback.

For every prompt a model samples two candidate answers (at `temperature_0` and
`temperature_1`, so that they differ), and a grader or a pairwise judge picks the better
one. Pairs it cannot separate (equal grades, a grade gap of at most `min_gap`, a judge tie
or an unreadable judge answer) are left out and counted. The output is an rlhf_pipeline
preference file (`input_text` or `messages`, `candidate_0`, `candidate_1`, `choice`) that
keeps every field of the prompt row and records how each pair was labelled
(`label_source`, and `grades` or `judge_confidence`).

The candidates are written by `rlhfkit infer` into `OUT.candidates/`, so a killed run
continues where it stopped; the folder is removed once OUT is written.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from rlhfkit import seeding
from rlhfkit.config import build_config, check, param, to_dict
from rlhfkit.data.config import data_settings
from rlhfkit.data.formats import dropped_rows_path, load_dataset, load_prompts, record_dropped
from rlhfkit.data.records import PreferenceRecord, grader_item
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.eval.autoraters import JudgeConfig
from rlhfkit.fileio import atomic_write_jsonl

logger = logging.getLogger(__name__)


@dataclass
class SynthConfig(JudgeConfig):
    """AI-feedback preference data (`rlhfkit data synth`)."""

    prompt_dataset: str | None = param(None, "Prompts to sample candidate answers for.")
    out: str | None = param(None, "Output preference file (.jsonl).")
    model: str | None = param(
        None,
        "Model that samples the candidates (as rlhfkit infer's model); default: "
        "large_model_reference.",
    )
    grader: str | None = param(None, "Grader file that labels each pair (higher grade wins).")
    judge: str | None = param(None, "Pairwise judge that labels each pair: a model or URL.")
    temperature_0: float = param(0.7, "Sampling temperature of candidate_0.")
    temperature_1: float = param(1.0, "Sampling temperature of candidate_1.")
    top_p: float = param(1.0, "Nucleus sampling mass of both candidates.")
    min_gap: float = param(0.0, "Pairs whose grades differ by at most this are left out.")
    min_confidence: float = param(
        0.5, "Judge labels with a lower confidence (see rlhfkit sxs) are left out."
    )
    batch_size: int = param(16, "Prompts generated (and pairs labelled) together.")
    seed: int = param(0, "Seed of the sampling.")
    dtype: str = param("auto", "bf16, fp32 or auto.", choices=("auto", "bf16", "fp32"))
    device: str = param("auto", "cpu, cuda or auto.", choices=("auto", "cpu", "cuda"))

    def validate(self) -> None:
        super().validate()
        check(bool(self.prompt_dataset), "prompt_dataset", self.prompt_dataset, "is required")
        check(bool(self.out), "out", self.out, "is required: the output preference .jsonl")
        if bool(self.grader) == bool(self.judge):
            raise ConfigError("give exactly one labeller: grader=FILE.yaml or judge=MODEL_OR_URL")
        for name in ("temperature_0", "temperature_1"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0 (sampling)")
        check(self.min_gap >= 0, "min_gap", self.min_gap, "must be >= 0")
        check(0 <= self.min_confidence <= 1, "min_confidence", self.min_confidence, "in [0, 1]")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")

    @property
    def label_source(self) -> str:
        return f"grader:{self.grader}" if self.grader else f"judge:{self.judge}"


@dataclass
class SynthResult:
    out: Path
    pairs: int
    prompts: int
    dropped: dict[str, int]
    candidate_0_chosen: float


def synthesize(config: SynthConfig) -> SynthResult:
    """Sample two candidates per prompt, label the pairs, write the preference file."""
    from rlhfkit.eval.autoraters import Pair, judge_pairs, load_autorater

    # step 1. the labeller first: a bad grader file fails before any sampling; the prompts'
    # bad rows (with bad_rows=skip) listed beside the output
    rater = load_autorater(config.label_source, config)
    prompts = load_dataset(config.prompt_dataset, bad_rows=config.bad_rows)
    for line in record_dropped({config.prompt_dataset: prompts}, dropped_rows_path(config.out)):
        logger.warning(line)
    # step 2. two candidates per prompt (resumable: rlhfkit infer)
    work = Path(f"{config.out}.candidates")
    files = _sample_candidates(config, work)
    records_0, records_1 = load_prompts(files[0]).records, load_prompts(files[1]).records
    # step 3. label
    pairs = [
        Pair(
            i, r0, r0.extra["prediction"], r1.extra["prediction"], grader_item(r0), grader_item(r1)
        )
        for i, (r0, r1) in enumerate(zip(records_0, records_1, strict=True))
    ]
    settings = {k: v for k, v in to_dict(config).items() if k not in ("out", "batch_size")}
    judgments = judge_pairs(
        rater, pairs, config.batch_size, work / "labels.partial", settings, desc="label"
    )
    # step 4. keep the pairs the labeller separates
    from rlhfkit.data.convert import rlhf_preference_row

    rows, dropped = [], {"identical": 0, "tie": 0, "unreadable": 0, "low_confidence": 0}
    for pair, judgment in zip(pairs, judgments, strict=True):
        reason = _drop_reason(config, pair, judgment)
        if reason:
            dropped[reason] += 1
            continue
        record = _labelled_record(config, pair, judgment)
        rows.append(rlhf_preference_row(record))
    if not rows:
        raise RlhfkitError(
            f"no pair could be labelled ({dropped}); lower min_gap or min_confidence, raise "
            "temperature_1, or check the grader"
        )
    atomic_write_jsonl(config.out, rows)
    shutil.rmtree(work, ignore_errors=True)
    share = sum(r["choice"] == 0 for r in rows) / len(rows)
    return SynthResult(Path(config.out), len(rows), len(pairs), dropped, share)


def _sample_candidates(config: SynthConfig, work: Path) -> list[Path]:
    """Two `rlhfkit infer` runs over the prompts, at temperature_0 and temperature_1."""
    from rlhfkit.eval.infer import InferConfig, infer

    shared = {
        **data_settings(config),
        **{k: getattr(config, k) for k in ("top_p", "batch_size", "dtype", "device")},
    }
    files = []
    for index, temperature in enumerate((config.temperature_0, config.temperature_1)):
        values = {
            **shared,
            "model": config.model,
            "prompt_dataset": config.prompt_dataset,
            "out": str(work / f"candidate_{index}.jsonl"),
            "temperature": temperature,
            "seed": seeding.synth_candidate(config.seed, index),
        }
        files.append(infer(build_config(InferConfig, values)).out)
    return files


def _labelled_record(config: SynthConfig, pair, judgment) -> PreferenceRecord:
    """The pair as a preference record: the judged better answer chosen, with how it was
    labelled (`label_source`, and `grades` or `judge_confidence`)."""
    choice = 0 if judgment.choice == "A" else 1
    extra = {k: v for k, v in pair.record.extra.items() if k != "prediction"}
    extra["label_source"] = config.label_source
    if judgment.score_a is not None:
        extra["grades"] = [judgment.score_a, judgment.score_b]
    else:
        extra["judge_confidence"] = judgment.confidence
    return PreferenceRecord(
        messages=pair.record.messages,
        chosen=(pair.response_a, pair.response_b)[choice],
        rejected=(pair.response_a, pair.response_b)[1 - choice],
        source=pair.record.source,
        choice=choice,
        extra=extra,
        chat=pair.record.chat,
    )


def _drop_reason(config: SynthConfig, pair, judgment) -> str | None:
    if pair.response_a.strip() == pair.response_b.strip():
        return "identical"
    if judgment.choice is None:
        return "unreadable"
    if judgment.choice == "TIE":
        return "tie"
    if judgment.score_a is not None and abs(judgment.score_a - judgment.score_b) <= config.min_gap:
        return "tie"
    if judgment.score_a is None and judgment.confidence < config.min_confidence:
        return "low_confidence"
    return None


def noisy_labels(rows: list[dict], tau: float, seed: int) -> list[dict]:
    """Graded pairs relabelled with noise like people's: each row's `choice` drawn from a
    Bradley-Terry model of its two grades, P(candidate_0 chosen) = sigmoid((grade_0 -
    grade_1) / tau), so that close pairs are nearly coin flips and clear ones nearly always
    go to the better answer. The grader's own choice is kept as `grader_choice`.

    Args:
        rows: `data synth` rows labelled by a grader (with `grades` and `choice`).
        tau: the noise's temperature, in grade units (smaller: fewer flipped labels).
        seed: seed of the draws; the same rows, tau and seed give the same labels.

    Returns:
        the rows with the drawn `choice`, `grader_choice`, and the noise in `label_source`.
    """
    rng = random.Random(seed)
    out = []
    for row in rows:
        grade_0, grade_1 = row["grades"]
        # clamped: a tiny tau must give a sure label, not an overflow
        p_first = 1 / (1 + math.exp(max(-50.0, min(50.0, -(grade_0 - grade_1) / tau))))
        choice = 0 if rng.random() < p_first else 1
        source = f"{row.get('label_source', 'grades')} with Bradley-Terry noise (tau={tau:g})"
        out.append(
            {**row, "choice": choice, "grader_choice": row["choice"], "label_source": source}
        )
    return out
