"""`rlhfkit report`: one self-contained `report.html` for a run, the answer first.

The page opens with the verdicts: per judge, whether the tuned model beats the base (win
rates with 95% intervals), the reward model's held-out accuracy beside the better length
rule, and the held-out reward before and after RL with the KL. Then come the training curves
by stage, the examples (base and tuned answer to the same prompt, with each judge's
verdict), and at the end the full side-by-side tables, every figure of summary.json and the
resolved config. Nothing is loaded from elsewhere and the page has no scripts; its Content
Security Policy forbids them. The page is a Jinja2 template (`templates/report.html.j2`)
with autoescape on, so all text from the run (answers, prompts, config values) shows as
text: an answer containing `<script>` is not run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from rlhfkit.config import read_yaml
from rlhfkit.errors import RlhfkitError
from rlhfkit.eval.plot import (
    SKIPPED_FOLDERS,
    Curve,
    check_smoothing,
    read_curves,
    render_curve,
)
from rlhfkit.eval.sxs import JUDGMENTS_FILE, METRICS_FILE
from rlhfkit.eval.verdicts import Verdict, mean_last_kl, rl_sentence, side_by_side_verdict
from rlhfkit.fileio import atomic_write_text
from rlhfkit.tracking import read_metrics

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
EXAMPLES_EACH_END = 10
"""How many best and how many worst examples are shown before the rest."""
PROMPT_PREVIEW_CHARS = 240

MAIN_CURVES = (
    # reward model: training loss and accuracy, then the validation and held-out figures
    "rank_loss", "accuracy", "valid/rank_loss", "valid/accuracy", "eval/rank_loss",
    "eval/accuracy",
    # RL: reward, held-out reward, KL, entropy, answer length
    "train_reward_mean", "reward", "valid_reward_mean", "eval/reward", "objective/kl",
    "objective/entropy", "rollout/response_length", "valid_response_length",
    "eval/response_length",
    # DPO: loss, implicit-reward margin and accuracy, validation and held-out figures
    "loss", "rewards/margins", "rewards/accuracies", "valid/loss", "valid/accuracy",
    "eval/loss",
)  # fmt: skip
"""Curves shown open, in this order; the others of a stage are collapsed."""
RL_CURVES = frozenset({"objective/kl", "rl_loss", "train_reward_mean", "reward"})
"""Any of these in a metrics file makes it an RL run's."""
HIDDEN_CURVE = re.compile(
    r"(^|/)(n|ties|n_chosen_longer|n_chosen_shorter|accuracy_ci95_low|accuracy_ci95_high)$"
    r"|^best_step$"
)
"""Counts and interval bounds: not curves (the bounds shade their accuracy curve)."""


@dataclass(frozen=True)
class SideBySide:
    """One sxs folder: its figures, its judgments and the verdict they give."""

    judge: str
    """The folder's name (e.g. `grader`), naming the judge in the examples."""
    where: str
    """The folder, relative to the run directory when it is inside it."""
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    verdict: Verdict


@dataclass(frozen=True)
class Headline:
    """The first screen besides the side-by-side verdicts: the reward model's lines (as
    `train-reward` prints them), the RL line, and the rows `bad_rows=skip` left out of the
    pipeline's datasets (one line per dataset, as `rlhfkit run` prints them)."""

    reward: list[str]
    rl: str | None
    dropped: list[str]


@dataclass(frozen=True)
class Figure:
    """One drawn curve: its name and the PNG, base64-encoded."""

    name: str
    png: str


@dataclass(frozen=True)
class Stage:
    """The curves of one training run, in tiers: open, other, timing and throughput."""

    title: str
    note: str | None
    """One line said instead of the plots when nothing can be drawn."""
    main: list[Figure]
    other: list[Figure]
    timing: list[Figure]
    once: list[str]
    """Figures logged at one step only, with their value (not drawn)."""


@dataclass(frozen=True)
class Judgment:
    """One judge's verdict on one pair."""

    judge: str
    choice: str
    confidence: float
    score_a: float | None
    score_b: float | None
    explanation: str
    human: str | None


@dataclass
class Example:
    """A prompt with the base (A) and tuned (B) answers and every judge's verdict."""

    id: str
    prompt: str
    base: str
    tuned: str
    judgments: list[Judgment]
    lead: tuple[int, float] = (0, 0.0)
    """Judges preferring tuned minus those preferring base, then the summed margin."""
    base_cut: bool = False
    tuned_cut: bool = False
    """Whether the answer was cut at the token limit (the model did not end it)."""


class Row(NamedTuple):
    """One figure of summary.json: its flattened key, its text, and whether the text is a
    block (JSON of a list or mapping)."""

    key: str
    text: str
    block: bool


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    sxs_dirs: list[str | Path] | None = None,
    smoothing: float = 0.6,
    title: str | None = None,
) -> Path:
    """Build the report of `run_dir` (and of extra SxS folders); returns its path.

    Args:
        run_dir: a pipeline run, or a `train-reward` or `train-rl` run directory.
        out: the HTML file to write (default RUN_DIR/report.html).
        sxs_dirs: `rlhfkit sxs` output folders besides those found under `run_dir`.
        smoothing: EMA weight of the curves, in [0, 1).
        title: the page title (default the run's `model_display_name`, else its folder).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RlhfkitError(f"run directory {run_dir} does not exist")
    check_smoothing(smoothing)
    judged = [_read_sxs(folder, run_dir) for folder in _sxs_folders(run_dir, sxs_dirs)]
    if title is None and (run_dir / "config.yaml").is_file():
        title = read_yaml(run_dir / "config.yaml").get("model_display_name")
    page = _template().render(
        title=f"rlhfkit report: {title or run_dir.resolve().name}",
        run_dir=str(run_dir.resolve()),
        made=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        headline=_headline(run_dir),
        stages=_stages(run_dir, smoothing),
        examples=_examples(judged),
        judged=judged,
        summaries=_summaries(run_dir),
        configs=_configs(run_dir),
        preview_chars=PROMPT_PREVIEW_CHARS,
    )
    path = Path(out) if out else run_dir / REPORT_FILE
    atomic_write_text(path, page)
    return path


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("rlhfkit.eval", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE)


def _stage_files(run_dir: Path, name: str) -> list[Path]:
    return [
        p
        for p in sorted(run_dir.rglob(name))
        if not any(part in SKIPPED_FOLDERS for part in p.relative_to(run_dir).parts)
    ]


def _label(path: Path, run_dir: Path) -> str:
    relative = path.relative_to(run_dir)
    return str(relative) if relative.parts else "run"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- side by side


def _sxs_folders(run_dir: Path, extra: list[str | Path] | None) -> list[Path]:
    found = [
        p.parent
        for p in _stage_files(run_dir, JUDGMENTS_FILE)
        if (p.parent / METRICS_FILE).is_file()
    ]
    folders = found + [Path(d) for d in extra or []]
    for folder in folders:
        if not (folder / METRICS_FILE).is_file() or not (folder / JUDGMENTS_FILE).is_file():
            raise RlhfkitError(
                f"{folder} is not an sxs output folder: it needs {METRICS_FILE} and "
                f"{JUDGMENTS_FILE} (write them with rlhfkit sxs)"
            )
    return folders


def _read_sxs(folder: Path, run_dir: Path) -> SideBySide:
    metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (folder / JUDGMENTS_FILE).read_text("utf-8").splitlines()
        if line
    ]
    where = _label(folder, run_dir) if folder.is_relative_to(run_dir) else str(folder)
    return SideBySide(folder.name, where, metrics, rows, side_by_side_verdict(metrics))


# ---------------------------------------------------------------- first screen


def _headline(run_dir: Path) -> Headline:
    reward, rl = _stage_summaries(run_dir)
    summary = _read_json(run_dir / "summary.json")
    data = summary.get("data") if isinstance(summary, dict) else None
    dropped = data.get("dropped_rows", []) if isinstance(data, dict) else []
    return Headline(
        _reward_lines(reward) if reward else [],
        rl_sentence(rl) if rl else None,
        [str(line) for line in dropped],
    )


def _stage_summaries(run_dir: Path) -> tuple[dict | None, dict | None]:
    """The reward model's and the RL run's figures: a pipeline summary's `reward_model`
    and `rl`, or the summary.json of a train-reward or train-rl run."""
    summary = _read_json(run_dir / "summary.json")
    if not isinstance(summary, dict):
        return None, None
    for tuning in ("rl", "dpo"):
        if isinstance(summary.get(tuning), dict):
            return summary.get("reward_model"), summary[tuning]
    if "eval_reward_margin" in summary:  # a train-dpo run
        return None, {**summary, "method": "dpo"}
    if "eval_accuracy" in summary:
        return summary, None
    rl_keys = ("eval_reward_before", "eval_reward_after", "eval_prompts", "steps")
    if all(key in summary for key in rl_keys):
        return None, {**summary, "kl_last_5_steps": mean_last_kl(read_metrics(run_dir))}
    return None, None


def _reward_lines(reward: dict[str, Any]) -> list[str]:
    """The lines `train-reward` and `rlhfkit run` print about the reward model."""
    from rlhfkit.train.reward_summary import result_lines

    try:
        return [line.strip() for line in result_lines(reward)]
    except KeyError as missing:
        return [
            f"reward model: its summary has no {missing} (written by an older rlhfkit); "
            "its figures are in the details at the end"
        ]


# ---------------------------------------------------------------- curves


def _stages(run_dir: Path, smoothing: float) -> list[Stage]:
    try:
        curves = read_curves(run_dir)
    except RlhfkitError:
        return []
    runs: dict[str, list[Curve]] = {}
    for curve in curves:
        runs.setdefault(curve.run, []).append(curve)
    return [_stage(run, found, smoothing) for run, found in runs.items()]


def _stage(run: str, curves: list[Curve], smoothing: float) -> Stage:
    names = {c.name: c for c in curves}
    kind = _stage_kind(set(names))
    title = kind if run == "." else f"{kind} ({run}/)"
    shown = [_with_band(c, names) for c in curves if not HIDDEN_CURVE.search(c.name)]
    drawn = sorted((c for c in shown if len(c.steps) > 1), key=_curve_order)
    if not drawn:
        return Stage(title, _nothing_to_draw(kind, shown), [], [], [], [])
    tiers: dict[str, list[Figure]] = {"main": [], "other": [], "timing": []}
    for curve in drawn:
        png = base64.b64encode(render_curve(curve, smoothing)).decode()
        tiers[_tier(curve.name)].append(Figure(curve.name, png))
    once = [f"{c.name} {c.values[0]:.4g} (step {c.steps[0]})" for c in shown if len(c.steps) == 1]
    return Stage(title, None, tiers["main"], tiers["other"], tiers["timing"], once)


def _stage_kind(names: set[str]) -> str:
    if any(name.endswith("rank_loss") for name in names):
        return "Reward model"
    if "rewards/margins" in names:
        return "DPO"
    return "RL" if RL_CURVES & names else "Training"


def _with_band(curve: Curve, curves: dict[str, Curve]) -> Curve:
    """An accuracy curve with its logged 95% interval as a band, when there is one."""
    if not curve.name.endswith("accuracy"):
        return curve
    low = curves.get(f"{curve.name}_ci95_low")
    high = curves.get(f"{curve.name}_ci95_high")
    if low is None or high is None or not low.steps == high.steps == curve.steps:
        return curve
    return dataclasses.replace(curve, band=(low.values, high.values))


def _curve_order(curve: Curve) -> tuple[int, str]:
    main = curve.name in MAIN_CURVES
    return (MAIN_CURVES.index(curve.name) if main else len(MAIN_CURVES), curve.name)


def _tier(name: str) -> str:
    if name in MAIN_CURVES:
        return "main"
    if name.startswith("timing/") or name.endswith("_per_second"):
        return "timing"
    return "other"


def _nothing_to_draw(kind: str, curves: list[Curve]) -> str:
    steps = sorted({step for curve in curves for step in curve.steps})
    if kind == "Reward model" and steps == [0]:
        return (
            "No training step: the reward head was fitted on the base model's features "
            "alone, so there is no curve to draw (its held-out figures are at the top)."
        )
    logged = ", ".join(str(step) for step in steps) or "none"
    return f"Nothing to draw: no figure was logged at more than one step (steps: {logged})."


# ---------------------------------------------------------------- examples


def example_margin(row: dict[str, Any]) -> float:
    """How far B is ahead of A in one judgment: the score difference, else the signed
    confidence of the choice (ties and invalid judgments 0)."""
    if isinstance(row.get("score_a"), (int, float)) and isinstance(
        row.get("score_b"), (int, float)
    ):
        return float(row["score_b"]) - float(row["score_a"])
    sign = {"A": -1.0, "B": 1.0}.get(row.get("choice"), 0.0)
    return sign * float(row.get("confidence") or 0.0)


def _examples(judged: list[SideBySide]) -> dict[str, list[Example]]:
    """Every judged pair once, with all the judges that saw it, split into where tuned
    did best, where it did worst (most preferred and least preferred first) and the rest."""
    pairs: dict[tuple[str, str, str], Example] = {}
    for sxs in judged:
        for row in sxs.rows:
            base, tuned = str(row.get("response_a", "")), str(row.get("response_b", ""))
            prompt = str(row.get("prompt", ""))
            example = pairs.setdefault(
                (prompt, base, tuned),
                Example(
                    str(row.get("id", "")),
                    prompt,
                    base,
                    tuned,
                    [],
                    base_cut=row.get("ended_a") is False,
                    tuned_cut=row.get("ended_b") is False,
                ),
            )
            example.judgments.append(_judgment(sxs.judge, row))
            votes, margin = example.lead
            sign = {"A": -1, "B": 1}.get(row.get("choice"), 0)
            example.lead = (votes + sign, margin + example_margin(row))
    ranked = sorted(pairs.values(), key=lambda e: e.lead, reverse=True)
    k = min(EXAMPLES_EACH_END, len(ranked) // 2)
    return {
        "best": ranked[:k],
        "worst": ranked[len(ranked) - k :][::-1],
        "rest": ranked[k : len(ranked) - k],
    }


def _judgment(judge: str, row: dict[str, Any]) -> Judgment:
    def score(key: str) -> float | None:
        value = row.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    human = row.get("human_choice")
    return Judgment(
        judge,
        str(row.get("choice")),
        float(row.get("confidence") or 0.0),
        score("score_a"),
        score("score_b"),
        str(row.get("explanation") or ""),
        None if human is None else str(human),
    )


# ---------------------------------------------------------------- details


def _summaries(run_dir: Path) -> dict[str, list[Row]]:
    """The run's summary.json, flattened (a pipeline's nests each stage's figures); the
    stages' own summaries only when the run has none."""
    root = run_dir / "summary.json"
    paths = [root] if root.is_file() else _stage_files(run_dir, "summary.json")
    tables = {}
    for path in paths:
        summary = _read_json(path)
        if isinstance(summary, dict):
            label = "summary.json" if path == root else _label(path, run_dir)
            tables[label] = [Row(k, *_value(v)) for k, v in flatten(summary).items()]
    return tables


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"rl": {"steps": 3}}` -> `{"rl.steps": 3}`; lists stay values."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out.update(flatten(item, f"{name}."))
        else:
            out[name] = item
    return out


def _value(value: Any) -> tuple[str, bool]:
    if isinstance(value, float):
        return f"{value:.4g}", False
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return ", ".join(f"{v:.4g}" for v in value), False
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=1, ensure_ascii=False), True
    return str(value), False


def _configs(run_dir: Path) -> dict[str, str]:
    return {
        _label(p.parent, run_dir): p.read_text(encoding="utf-8")
        for p in _stage_files(run_dir, "config.yaml")
    }
