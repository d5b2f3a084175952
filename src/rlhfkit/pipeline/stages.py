"""A stage of the pipeline: run, skipped when its inputs are unchanged, or continued."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.fileio import atomic_write_json

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stage_key(name: str, settings: dict[str, Any], upstream: list[str]) -> str:
    """The hash that decides whether a finished stage can be kept."""
    blob = json.dumps([name, settings, upstream], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageRunner:
    """Runs a stage, skips it, or continues it, by its `stage.json`."""

    def __init__(self, run_dir: Path, from_stage: str | None):
        self.run_dir = run_dir
        self.forced = False
        self.from_stage = from_stage

    def run(
        self, name: str, key: str, work: Callable[[Path, bool], Any], folder_name: str = ""
    ) -> Any:
        """`work(folder, resume)` runs the stage; its return value is stored as the stage's
        outputs and returned (also when the stage is skipped)."""
        folder = self.run_dir / (folder_name or name)
        record_path = folder / STAGE_FILE
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        self.forced = self.forced or name == self.from_stage
        same = record is not None and record.get("key") == key and not self.forced
        if same and record.get("status") == "done":
            logger.info("stage %s: unchanged, skipped (%s)", name, folder)
            return record.get("outputs")
        resume = same  # interrupted with the same inputs: continue
        if not resume and folder.exists():
            why = "forced" if self.forced else "inputs changed" if record else "incomplete"
            logger.info("stage %s: starting again (%s)", name, why)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        atomic_write_json(record_path, {"key": key, "status": "running", "started": started})
        print(f"== stage {name}{' (continuing)' if resume else ''}", flush=True)
        outputs = work(folder, resume)
        seconds = round(time.time() - started, 1)
        atomic_write_json(
            record_path,
            {
                "key": key,
                "status": "done",
                "started": started,
                "seconds": seconds,
                "outputs": outputs,
            },
        )
        print(f"== stage {name} done in {seconds // 60:.0f} min {seconds % 60:.0f} s", flush=True)
        return outputs
