"""Atomic training checkpoints: `checkpoints/step-000100/` holds everything to resume."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from rlhfkit.fileio import atomic_path

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
SCORE_FILE = "score.json"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler: Any,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
    score: float | None = None,
    keep_best: int = 0,
) -> Path:
    """Write trainable weights (full tensors by name), the optimizer's state dict, the
    scheduler and RNG states.

    Keeps the newest `keep` checkpoints and, besides them, the `keep_best` with the highest
    `score` (a held-out metric written beside the state as score.json).
    """
    target = checkpoint_dir(run_dir, step)
    state = {
        "step": step,
        "trainable": {k: v.detach().cpu() for k, v in trainable.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.random.get_rng_state(),
            "python": random.getstate(),
        },
        "extra": extra or {},
    }
    with atomic_path(target) as tmp:
        tmp.mkdir()
        torch.save(state, tmp / STATE_FILE)
        if score is not None:
            (tmp / SCORE_FILE).write_text(json.dumps({"step": step, "score": score}) + "\n")
    found = list_checkpoints(run_dir)
    kept = set(found[-keep:])
    kept.update(path for path, _, _ in best_checkpoints(run_dir, keep_best))
    for old in found:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return target


def best_checkpoints(run_dir: str | Path, count: int) -> list[tuple[Path, int, float]]:
    """The `count` scored checkpoints with the highest score, best first: (path, step,
    score); ties go to the earlier step."""
    scored = []
    for path in list_checkpoints(run_dir):
        if (path / SCORE_FILE).is_file():
            record = json.loads((path / SCORE_FILE).read_text())
            scored.append((path, int(record["step"]), float(record["score"])))
    scored.sort(key=lambda entry: (-entry[2], entry[1]))
    return scored[:count]


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def remove_partial_writes(run_dir: str | Path) -> list[Path]:
    """Remove what a run killed while writing a checkpoint left (`.step-N.*.tmp` folders,
    full-size for full fine-tuning); returns what was removed. A `.step-N.old` copy whose
    replacement never arrived (killed between the two renames) becomes `step-N` again."""
    folder = Path(run_dir) / CHECKPOINTS
    stale = sorted(folder.glob(".step-*.tmp"))
    for old in sorted(folder.glob(".step-*.old")):
        complete = folder / old.name.removeprefix(".").removesuffix(".old")
        if complete.exists():
            stale.append(old)
        else:
            old.rename(complete)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)


def restore_rng(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
