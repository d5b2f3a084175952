"""Local-first run tracking: `metrics.jsonl` (the source of truth) and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Append one JSON line per logged step and mirror scalars to TensorBoard.

    On resume from step `resume_step`, lines after it are dropped (they are recomputed),
    and TensorBoard purges its events after that step, so curves show no duplicates.
    """

    def __init__(self, run_dir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step > 0:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(
            log_dir=str(self.run_dir), purge_step=resume_step + 1 if resume_step else None
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def text(self, step: int, tag: str, body: str) -> None:
        if self.enabled:
            self._writer.add_text(tag, body, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics file (a torn last line from a kill is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only complete lines with step <= last_step (rewritten atomically)."""
    from rlhfkit.fileio import atomic_write_text

    kept = [row for row in read_metrics(path) if row.get("step", 0) <= last_step]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value
