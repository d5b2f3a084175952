"""Resuming a run: where it stopped, and whether the checkpoint came from the same data and
settings (what may change on a resume, and what may not)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from rlhfkit.errors import ConfigError
from rlhfkit.fileio import atomic_write_jsonl, check_output_path
from rlhfkit.train import checkpoint as ckpt

logger = logging.getLogger(__name__)


RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "reward_model_train_steps",
        "reinforcement_learning_train_steps",
        "num_epochs",
        "n_epochs",
        "train_steps",
        "max_steps",
        "log_every",
        "eval_every",
        "eval_interval",
        "save_every",
        "sample_every",
        "early_stopping_patience",
        "eval_prompts",
        "eval_samples",
        "keep_best",
        "save_merged",
        "micro_batch_tokens",
        "micro_batch_size",
        "pad_to_multiple",
        "device",
        "compile",
        "sharding",
        "output_dir",
    }
)
"""Settings a resumed run may change: how long it runs, how often it logs, evaluates and
saves, and how it is computed (micro-batches, device, compiling); not what it learns from or
how. The number of processes is not a setting and may change too."""


RESUMES_FILE = "resumes.jsonl"
"""Where a run records each resume that changed a setting: {step, changed: {key: [old, new]}}."""


def data_digest(datasets: dict[str, Any]) -> str:
    """One digest of the contents the run's datasets were read from, in the order read (their
    own digests, made while reading: no file is read again)."""
    return hashlib.sha256("".join(d.content_digest for d in datasets.values()).encode()).hexdigest()


def check_resume(
    state: dict[str, Any] | None,
    config: dict[str, Any],
    digest: str,
    run_dir: Path,
    main: bool = True,
) -> None:
    """Refuse to resume a checkpoint made with other data or settings that change what the
    run learns (listing every change, old -> new, and what to do); record the changes that
    are allowed (`RESUME_MAY_CHANGE`) in the run's resumes.jsonl (by the `main` process)."""
    if state is None:
        return
    extra = state.get("extra", {})
    old = extra.get("config")
    if old is None:  # a checkpoint from before settings were kept in it
        return
    # a setting the checkpoint does not know (added since) was at its default then
    changed = {
        key: [old[key], config.get(key)]
        for key in sorted(old)
        if key in config and old[key] != config[key]
    }
    refused = [
        f"{key}: {a!r} -> {b!r}" for key, (a, b) in changed.items() if key not in RESUME_MAY_CHANGE
    ]
    if extra.get("data") not in (None, digest):
        refused.append("the data: the dataset files differ from those the run started with")
    if refused:
        raise ConfigError(
            f"resume=true: the checkpoint at step {state['step']} in {run_dir} was made with "
            f"other settings; resuming would mix two runs:\n  - "
            + "\n  - ".join(refused)
            + "\nresume with the settings and data it started with, or start a new run "
            "(another output_dir, or without resume=true after removing the old one)"
        )
    if changed and main:
        record = run_dir / RESUMES_FILE
        earlier = (
            [json.loads(line) for line in record.read_text().splitlines()]
            if record.is_file()
            else []
        )
        atomic_write_jsonl(record, [*earlier, {"step": state["step"], "changed": changed}])
        logger.info(
            "resuming at step %d with changed settings (recorded in %s): %s",
            state["step"],
            record,
            ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
        )


def resume_point(resume: bool, run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """(first step to run, checkpoint state): (0, None) for a fresh run. What a kill during a
    checkpoint write left behind is removed first; a run directory that cannot be written
    fails here, before any work."""
    check_output_path(run_dir, folder=True)
    for path in ckpt.remove_partial_writes(run_dir):
        logger.info("removed %s, a checkpoint whose writing was interrupted", path)
    latest = ckpt.latest_checkpoint(run_dir)
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"output_dir={str(run_dir)!r} already holds checkpoints; pass resume=true to "
                "continue that run, or choose a new output_dir"
            )
        return 0, None
    if latest is None:
        logger.info("resume=true but %s has no checkpoint: starting from step 0", run_dir)
        return 0, None
    state = ckpt.load_checkpoint(latest)
    logger.info("resuming from %s (step %d)", latest, state["step"])
    return int(state["step"]), state
