"""`rlhfkit launch nproc=N COMMAND ...`: a training command on N processes of this machine.

The processes are started by PyTorch's elastic launcher, the engine behind `torchrun`
(`torchrun --standalone --nproc-per-node N -m rlhfkit.cli COMMAND ...` does the same),
and train data-parallel (see `rlhfkit.train.parallel`). When a rank fails the launcher
stops the others, and this command says which rank failed and how, and how to continue
from the last checkpoint, with any number of processes.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

from rlhfkit.errors import ConfigError

COMMANDS = ("train-reward", "train-rl")


def started_by_torchrun() -> bool:
    """Whether PyTorch's elastic launcher (torchrun, `rlhfkit launch`) started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def launch(nproc: int, command: list[str], threads: int = 0) -> int:
    """Run `rlhfkit COMMAND ...` on `nproc` processes; returns the exit status.

    Args:
        nproc: how many processes (ranks) on this machine.
        command: the rlhfkit command and its arguments, e.g. ["train-reward", "k=v", ...].
        threads: CPU threads per process (0 = this machine's cores / nproc).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ConfigError(f"nproc={nproc}: give the number of processes, at least 1")
    if not command or command[0] not in COMMANDS:
        given = command[0] if command else "nothing"
        raise ConfigError(
            f"rlhfkit launch runs {' or '.join(COMMANDS)}, not {given}: "
            "rlhfkit launch nproc=2 train-reward preference_dataset=... output_dir=..."
        )
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    print(f"rlhfkit launch: {nproc} processes x {threads} threads: rlhfkit {' '.join(command)}")
    try:
        elastic_launch(config, sys.executable)("-m", "rlhfkit.cli", *command)
    except ChildFailedError as exc:
        print(failure_message(exc.failures, command), file=sys.stderr)
        return _exit_code(exc.failures)
    return 0


def failure_message(failures: dict, command: list[str]) -> str:
    """Which ranks failed and how, and how to continue."""
    lines = []
    user_error = False
    stopped = [rank for rank, f in failures.items() if f.exitcode == -signal.SIGTERM]
    for rank, failure in sorted(failures.items()):
        if rank not in stopped:
            user_error = user_error or failure.exitcode == 2
            lines.append(f"rlhfkit launch: rank {rank} {_how(failure.exitcode)}")
    if stopped:
        ranks = ", ".join(str(r) for r in sorted(stopped))
        lines.append(f"rlhfkit launch: the launcher then stopped the other ranks ({ranks})")
    if user_error:
        lines.append("fix the problem the rank printed above and run the command again")
        return "\n".join(lines)
    output_dir = _option(command, "output_dir")
    latest = None
    if output_dir:
        from rlhfkit.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(output_dir)
    if latest is not None:
        lines.append(
            f"finished work is kept in {latest}: run the same command with resume=true (any "
            "nproc) to continue from there"
        )
    else:
        lines.append("no checkpoint was written yet; run the command again to start over")
    return "\n".join(lines)


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _exit_code(failures: dict) -> int:
    codes = [f.exitcode for f in failures.values()]
    return 2 if 2 in codes else 1


def _option(command: list[str], name: str) -> str | None:
    """The value of `name=...` among the command's arguments, else from its --config."""
    for arg in reversed(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    if "--config" in command[:-1]:
        from rlhfkit.config import read_yaml

        values = read_yaml(Path(command[command.index("--config") + 1]))
        value = values.get(name)
        return None if value is None else str(value)
    return None
