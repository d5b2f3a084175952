"""`rlhfkit plot`: one PNG per logged scalar, drawn from `metrics.jsonl` alone.

Each curve is smoothed with TensorBoard's debiased exponential moving average, the raw
values drawn faint behind it; a curve of fewer than `MIN_POINTS_TO_SMOOTH` points is drawn
as logged. Steps are whole numbers on the x axis. A run directory holds one
`metrics.jsonl`; a pipeline run directory holds one per stage, and each gets its own folder
of plots.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import RlhfkitError
from rlhfkit.tracking import METRICS_FILE, read_metrics

PLOTS_DIR = "plots"
SKIPPED_FOLDERS = ("checkpoints", PLOTS_DIR)
MIN_POINTS_TO_SMOOTH = 10
"""A curve with fewer points (e.g. a held-out figure logged twice) is drawn as logged: an
average over so few points would misstate the last value."""


@dataclass(frozen=True)
class Curve:
    """One logged scalar of one run: steps and values (non-finite values dropped)."""

    run: str
    name: str
    steps: list[int]
    values: list[float]
    band: tuple[list[float], list[float]] | None = None
    """Lower and upper bound at each step (a 95% interval), shaded behind the curve."""


def smooth(values: list[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing slider).

    s_t = weight * s_{t-1} + (1 - weight) * x_t, divided by (1 - weight^t) so that the
    first points are not pulled towards 0. `weight` 0 returns the values unchanged.
    """
    out, last = [], 0.0
    for t, value in enumerate(values, start=1):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight**t) if weight < 1 else value)
    return out


def find_metric_files(run_dir: str | Path) -> dict[str, Path]:
    """`metrics.jsonl` of the run, or of each stage folder below it, by relative name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RlhfkitError(f"run directory {run_dir} does not exist")
    found = {}
    for path in sorted(run_dir.rglob(METRICS_FILE)):
        relative = path.parent.relative_to(run_dir)
        if any(part in SKIPPED_FOLDERS for part in relative.parts):
            continue
        found[str(relative) if relative.parts else "."] = path
    if not found:
        raise RlhfkitError(
            f"{run_dir} holds no {METRICS_FILE}; give the folder of a training run "
            "(train-reward, train-rl) or of a pipeline run"
        )
    return found


def read_curves(run_dir: str | Path) -> list[Curve]:
    """Every numeric scalar logged in the run's metrics files, as curves."""
    curves = []
    for run, path in find_metric_files(run_dir).items():
        series: dict[str, tuple[list[int], list[float]]] = {}
        for row in read_metrics(path):
            step = row.get("step")
            for key, value in row.items():
                if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if math.isfinite(value):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
        curves += [Curve(run, name, s, v) for name, (s, v) in series.items()]
    return curves


def plot_run(
    run_dir: str | Path, out: str | Path | None = None, smoothing: float = 0.6
) -> list[Path]:
    """Write one PNG per curve under `out` (default RUN_DIR/plots); returns the files."""
    from rlhfkit.fileio import atomic_path

    check_smoothing(smoothing)
    out = Path(out) if out else Path(run_dir) / PLOTS_DIR
    written = []
    for curve in read_curves(run_dir):
        path = out / ("" if curve.run == "." else curve.run) / f"{safe_name(curve.name)}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(render_curve(curve, smoothing))
        written.append(path)
    return written


def check_smoothing(smoothing: float) -> None:
    if not 0 <= smoothing < 1:
        raise RlhfkitError(f"smoothing={smoothing} is invalid: must be in [0, 1)")


def render_curve(curve: Curve, smoothing: float = 0.6) -> bytes:
    """The curve as PNG bytes: smoothed line, raw values faint behind it (a short curve as
    logged), whole steps on the x axis and plain tick labels (no offset such as "+1e3" at
    the axis end)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if curve.band:
        low, high = curve.band
        ax.fill_between(curve.steps, low, high, color="#4C72B0", alpha=0.12, label="95% interval")
    if len(curve.values) < MIN_POINTS_TO_SMOOTH:
        ax.plot(curve.steps, curve.values, color="#4C72B0", linewidth=2, marker="o", label="logged")
    else:
        ax.plot(curve.steps, curve.values, color="#4C72B0", alpha=0.25, linewidth=1, label="raw")
        ax.plot(
            curve.steps,
            smooth(curve.values, smoothing),
            color="#4C72B0",
            linewidth=2,
            marker="o" if len(curve.values) <= 12 else None,
            label=f"smoothed ({smoothing:g})",
        )
    ax.set_title(curve.name if curve.run == "." else f"{curve.run}: {curve.name}")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def safe_name(name: str) -> str:
    """A metric name as a file name: `policy/clipfrac` -> `policy_clipfrac`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"
