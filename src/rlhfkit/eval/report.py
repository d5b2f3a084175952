"""`rlhfkit report`: one self-contained `report.html` for a run.

The page holds the resolved config of the run (and of each stage), its summary, the
training curves (PNG, embedded), the side-by-side win rates with their 95% intervals, and
the prompts with both answers side by side and their scores, the examples where B did best
and worst first. Nothing is loaded from elsewhere and the page has no scripts; its Content
Security Policy forbids them. All text from the run (model answers, prompts, config values)
is HTML-escaped, so an answer containing `<script>` shows as text.
"""

from __future__ import annotations

import base64
import json
import time
from html import escape
from pathlib import Path
from typing import Any

from rlhfkit.config import read_yaml
from rlhfkit.errors import RlhfkitError
from rlhfkit.eval.plot import SKIPPED_FOLDERS, check_smoothing, read_curves, render_curve
from rlhfkit.eval.sxs import JUDGMENTS_FILE, METRICS_FILE
from rlhfkit.fileio import atomic_write_text

REPORT_FILE = "report.html"
EXAMPLES_EACH_END = 10
"""How many best and how many worst examples are shown before the rest."""
PROMPT_PREVIEW_CHARS = 240

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .35em .5em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre, .text { white-space: pre-wrap; word-break: break-word; margin: 0; }
pre { background: #f7f7f7; padding: .6em; font-size: 12px; }
.curves img { width: 48%; min-width: 360px; margin: 0 1% 1em 0; border: 1px solid #eee; }
.bar { position: relative; height: 14px; background: #eee; width: 240px; }
.bar .fill { position: absolute; top: 0; bottom: 0; left: 0; background: #4C72B0; }
.bar .ci { position: absolute; top: 5px; height: 4px; background: #C44E52; }
.choice-A { background: #fbeaea; } .choice-B { background: #e8f3e8; }
.choice-TIE { background: #f4f4f4; } .choice-INVALID { background: #fff3cd; }
.muted { color: #777; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    sxs_dirs: list[str | Path] | None = None,
    smoothing: float = 0.6,
    title: str | None = None,
) -> Path:
    """Build the report of `run_dir` (and of extra SxS folders); returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RlhfkitError(f"run directory {run_dir} does not exist")
    check_smoothing(smoothing)
    sxs = _find_sxs(run_dir) + [Path(d) for d in sxs_dirs or []]
    for folder in sxs:
        if not (folder / METRICS_FILE).is_file() or not (folder / JUDGMENTS_FILE).is_file():
            raise RlhfkitError(
                f"{folder} is not an sxs output folder: it needs {METRICS_FILE} and "
                f"{JUDGMENTS_FILE} (write them with rlhfkit sxs)"
            )
    sections = [
        _section_summary(run_dir),
        *(_section_sxs(folder, run_dir) for folder in sxs),
        _section_curves(run_dir, smoothing),
        _section_config(run_dir),
    ]
    if title is None and (run_dir / "config.yaml").is_file():
        title = read_yaml(run_dir / "config.yaml").get("model_display_name")
    page = _page(f"rlhfkit report: {title or run_dir.resolve().name}", sections)
    path = Path(out) if out else run_dir / REPORT_FILE
    atomic_write_text(path, page)
    return path


def _page(title: str, sections: list[str]) -> str:
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="muted">written {escape(made)}</p>'
        + "".join(s for s in sections if s)
        + "</body></html>\n"
    )


def _stage_files(run_dir: Path, name: str) -> list[Path]:
    return [
        p
        for p in sorted(run_dir.rglob(name))
        if not any(part in SKIPPED_FOLDERS for part in p.relative_to(run_dir).parts)
    ]


def _find_sxs(run_dir: Path) -> list[Path]:
    return [
        p.parent
        for p in _stage_files(run_dir, JUDGMENTS_FILE)
        if (p.parent / METRICS_FILE).is_file()
    ]


def _label(path: Path, run_dir: Path) -> str:
    relative = path.relative_to(run_dir)
    return str(relative) if relative.parts else "run"


# ---------------------------------------------------------------- sections


def _section_summary(run_dir: Path) -> str:
    """The run's summary.json, flattened (a pipeline's nests each stage's figures); the
    stages' own summaries only when the run has none."""
    root = run_dir / "summary.json"
    paths = [root] if root.is_file() else _stage_files(run_dir, "summary.json")
    blocks = []
    for path in paths:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(summary, dict):
            rows = "".join(
                f"<tr><th>{escape(k)}</th><td>{_value(v)}</td></tr>"
                for k, v in flatten(summary).items()
            )
            title = "" if path == root else f"<h3>{escape(_label(path.parent, run_dir))}</h3>"
            blocks.append(f"{title}<table>{rows}</table>")
    return "<h2>Summary</h2>" + "".join(blocks) if blocks else ""


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


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return escape(", ".join(f"{v:.4g}" for v in value))
    if isinstance(value, (dict, list)):
        return f"<pre>{escape(json.dumps(value, indent=1, ensure_ascii=False))}</pre>"
    return escape(str(value))


def _section_config(run_dir: Path) -> str:
    blocks = [
        f"<h3>{escape(_label(p.parent, run_dir))}</h3>"
        f"<pre>{escape(p.read_text(encoding='utf-8'))}</pre>"
        for p in _stage_files(run_dir, "config.yaml")
    ]
    return "<h2>Resolved config</h2>" + "".join(blocks) if blocks else ""


def _section_curves(run_dir: Path, smoothing: float) -> str:
    try:
        curves = read_curves(run_dir)
    except RlhfkitError:
        return ""
    images = "".join(
        f'<img alt="{escape(c.name)}" src="data:image/png;base64,'
        f'{base64.b64encode(render_curve(c, smoothing)).decode()}">'
        for c in curves
    )
    return f'<h2>Training curves</h2><div class="curves">{images}</div>' if images else ""


def _section_sxs(folder: Path, run_dir: Path) -> str:
    metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    rows = [
        json.loads(line)
        for line in (folder / JUDGMENTS_FILE).read_text("utf-8").splitlines()
        if line
    ]
    where = escape(_label(folder, run_dir) if folder.is_relative_to(run_dir) else str(folder))
    head = (
        f"<h2>Side by side: {where}</h2><p>A = <code>{escape(str(metrics.get('a', 'A')))}</code>, "
        f"B = <code>{escape(str(metrics.get('b', 'B')))}</code>, judged by "
        f"<code>{escape(str(metrics.get('autorater', '?')))}</code> on {metrics.get('n', 0)} "
        f"pairs ({metrics.get('invalid_judgments', 0)} without a readable judgment, "
        f"{metrics.get('malformed_judge_outputs', 0)} malformed judge answers).</p>"
    )
    return head + _win_table(metrics) + _alignment_table(metrics) + _examples(rows)


def _win_table(metrics: dict[str, Any]) -> str:
    rows = []
    for label, key in (("A wins", "model_a"), ("B wins", "model_b")):
        rate = metrics.get(f"{key}_win_rate", 0.0)
        lo, hi = metrics.get(f"{key}_win_rate_ci95", [0.0, 1.0])
        bar = (
            f'<div class="bar"><div class="fill" style="width:{100 * rate:.1f}%"></div>'
            f'<div class="ci" style="left:{100 * lo:.1f}%;width:{100 * (hi - lo):.1f}%">'
            "</div></div>"
        )
        rows.append(
            f"<tr><th>{label}</th><td class=num>{metrics.get(f'{key}_wins', 0)}</td>"
            f"<td class=num>{rate:.3f}</td><td class=num>[{lo:.3f}, {hi:.3f}]</td>"
            f"<td>{bar}</td></tr>"
        )
    rows.append(
        f"<tr><th>ties</th><td class=num>{metrics.get('ties', 0)}</td>"
        f"<td class=num>{metrics.get('tie_rate', 0.0):.3f}</td><td></td><td></td></tr>"
    )
    return (
        "<table><tr><th></th><th>count</th><th>win rate</th><th>95% interval (Wilson)</th>"
        "<th>rate (bar) and interval (red)</th></tr>" + "".join(rows) + "</table>"
    )


def _alignment_table(metrics: dict[str, Any]) -> str:
    if "cohens_kappa" not in metrics:
        return ""
    cells = "".join(
        f"<tr><th>{name}</th><td class=num>{metrics[name]:.3f}</td></tr>"
        for name in ("accuracy", "precision", "recall", "f1_score", "cohens_kappa")
    )
    return (
        f"<p>Agreement with the human labels on {metrics.get('human_compared', 0)} pairs "
        "(precision, recall and F1 with B preferred as the positive class):</p>"
        f'<table style="width:auto">{cells}</table>'
    )


def example_margin(row: dict[str, Any]) -> float:
    """How far B is ahead of A in one judgment: the score difference, else the signed
    confidence of the choice (ties and invalid judgments 0)."""
    if isinstance(row.get("score_a"), (int, float)) and isinstance(
        row.get("score_b"), (int, float)
    ):
        return float(row["score_b"]) - float(row["score_a"])
    sign = {"A": -1.0, "B": 1.0}.get(row.get("choice"), 0.0)
    return sign * float(row.get("confidence") or 0.0)


def _examples(rows: list[dict[str, Any]]) -> str:
    ranked = sorted(rows, key=example_margin, reverse=True)
    k = min(EXAMPLES_EACH_END, len(ranked) // 2)
    best, worst, rest = ranked[:k], ranked[len(ranked) - k :][::-1], ranked[k : len(ranked) - k]
    parts = []
    if best:
        parts.append(f"<h3>Where B did best</h3>{_example_table(best)}")
        parts.append(f"<h3>Where B did worst</h3>{_example_table(worst)}")
    if rest:
        parts.append(
            f"<details><summary>All other examples ({len(rest)})</summary>"
            f"{_example_table(rest)}</details>"
        )
    return "".join(parts)


def _example_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for row in rows:
        choice = str(row.get("choice"))
        prompt = str(row.get("prompt", ""))
        preview = (
            prompt if len(prompt) <= PROMPT_PREVIEW_CHARS else prompt[:PROMPT_PREVIEW_CHARS] + "…"
        )
        prompt_cell = (
            f'<div class="text">{escape(prompt)}</div>'
            if preview == prompt
            else f'<details><summary class="text">{escape(preview)}</summary>'
            f'<div class="text">{escape(prompt)}</div></details>'
        )
        scores = "".join(
            f"{side} {row[key]:.3f}<br>"
            for side, key in (("A", "score_a"), ("B", "score_b"))
            if isinstance(row.get(key), (int, float))
        )
        human = f"<br>human: {escape(str(row['human_choice']))}" if "human_choice" in row else ""
        body.append(
            f'<tr class="choice-{escape(choice)}"><td>{escape(str(row.get("id", "")))}</td>'
            f"<td>{prompt_cell}</td>"
            f'<td><div class="text">{escape(str(row.get("response_a", "")))}</div></td>'
            f'<td><div class="text">{escape(str(row.get("response_b", "")))}</div></td>'
            f"<td class=num>{scores}</td>"
            f"<td><b>{escape(choice)}</b> ({float(row.get('confidence') or 0):.2f}){human}"
            f'<div class="text muted">{escape(str(row.get("explanation", "")))}</div></td></tr>'
        )
    return (
        '<table><tr><th>id</th><th style="width:26%">prompt</th><th style="width:22%">A</th>'
        '<th style="width:22%">B</th><th>scores</th><th>choice (confidence)</th></tr>'
        + "".join(body)
        + "</table>"
    )
