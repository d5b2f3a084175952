"""The bubblewrap (`bwrap`) sandbox that python graders run in.

`command` wraps the worker's command line in `bwrap` (Debian's `bubblewrap` package):
- namespaces: new PID, network, IPC, UTS and cgroup namespaces (plus a user namespace when
  rlhfkit does not run as root; bwrap adds it by itself). The network namespace holds only
  its own loopback: nothing outside the sandbox can be reached, 127.0.0.1 included.
- user: uid and gid 65534 (nobody), without capabilities. As root, the worker drops to
  them before it reads anything, so the code does not run as root on the host either;
  otherwise the invoking user is mapped to them in the user namespace. (Not
  `--unshare-all`: as root it adds a user namespace that maps uid 0 alone, and processes
  of uid 0 escape RLIMIT_NPROC.)
- files: a private root with `/usr`, `/bin`, `/lib`, `/lib64`, the Python installation
  (`sys.prefix`, `sys.base_prefix`) and the given folders bound read-only; a new `/proc`
  and `/dev`; a private `/tmp` (tmpfs, 64 MiB). Nothing else of the host: no `/etc`,
  no home folder.
- environment: only `FIXED_ENV`, for bwrap too (the worker adds the variables a grader
  declares).
- lifetime: `--die-with-parent` and `--new-session`; killing bwrap's process group ends the
  PID namespace, which kills every process in it. bwrap also dies with the thread that
  started it (the kernel's parent-death signal is per thread); the next call then starts
  a new worker.

Modes (`MODES`): `auto` sandboxes when bwrap works here and otherwise warns once and runs
unsandboxed; `required` makes a missing sandbox an error; `off` runs unsandboxed (warns
once). Whether bwrap works is checked once per process by running it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from rlhfkit.errors import ConfigError

MODES = ("auto", "required", "off")
MODE_VARIABLE = "RLHFKIT_GRADER_SANDBOX"
"""Environment variable giving the mode when the caller gives none (default auto)."""
BWRAP_VARIABLE = "RLHFKIT_BWRAP"
"""Environment variable naming the bubblewrap program (default: `bwrap` on PATH)."""
SANDBOX_ID = 65534
"""The uid and gid the code runs as (nobody)."""
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64")
TMP_BYTES = 64 * 1024 * 1024
FIXED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    # the process limit counts threads: one BLAS / OpenMP thread per process
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""The whole environment of a sandboxed worker, before the variables a grader declares;
bwrap itself gets only these too, since /proc/1/environ shows the environment it started
with."""
UNCONTAINED = (
    "its code can reach the network, read and write your files, read the environment "
    "and leave processes running"
)

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def sandbox_param() -> Any:
    """The `grader_sandbox` setting of every stage that loads graders."""
    from rlhfkit.config import param

    return param(
        None,
        "How python graders are contained: auto (bubblewrap when it works here, else a "
        "one-line warning), required (an error without it) or off; unset: "
        "$RLHFKIT_GRADER_SANDBOX, else auto.",
    )


def resolve_mode(mode: str | None, where: str = "sandbox") -> str:
    """The sandbox mode: `mode` when given, else $RLHFKIT_GRADER_SANDBOX, else auto.

    Args:
        where: the setting's name in an error message.

    Raises:
        ConfigError: the mode is not one of MODES.
    """
    if mode is None:
        mode, where = os.environ.get(MODE_VARIABLE) or "auto", MODE_VARIABLE
    if mode not in MODES:
        raise ConfigError(
            f"{where}={mode!r} is not a sandbox mode; choose one of: auto, required, off"
        )
    return mode


def choose(mode: str) -> bool:
    """Whether python graders run sandboxed under `mode`; warns once when they do not.

    Raises:
        ConfigError: `required`, and the sandbox cannot run here.
    """
    if mode == "off":
        _warn_once(f"python graders run without a sandbox (sandbox mode off): {UNCONTAINED}")
        return False
    problem = unavailable()
    if problem is None:
        return True
    if mode == "required":
        raise ConfigError(
            f"python graders must run in the sandbox (sandbox mode required), but {problem}"
        )
    _warn_once(
        f"python graders run without a sandbox ({problem}): {UNCONTAINED}; "
        f"{MODE_VARIABLE}=required refuses to run them"
    )
    return False


def unavailable() -> str | None:
    """Why the sandbox cannot run here, or None when it can (checked once per program)."""
    return _probe(os.environ.get(BWRAP_VARIABLE) or "bwrap")


@functools.cache
def _probe(program: str) -> str | None:
    if shutil.which(program) is None:
        return f"{program} was not found; install bubblewrap"
    probe = command([sys.executable, "-I", "-c", "pass"], [], None)
    try:
        result = subprocess.run(probe, capture_output=True, timeout=60, check=False, env=FIXED_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{program} did not run: {exc}"
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        return f"{program} cannot create the sandbox here: {lines[-1]}"
    return None


def command(argv: list[str], read_only: Iterable[Path], cwd: Path | None) -> list[str]:
    """`argv` run inside the sandbox.

    Args:
        argv: the command (its program must be inside the bound paths).
        read_only: host files and folders bound read-only at the same path (the worker
            script, the grader's folder).
        cwd: the working directory inside; default /tmp.
    """
    program = shutil.which(os.environ.get(BWRAP_VARIABLE) or "bwrap") or "bwrap"
    args = [program, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if os.geteuid() != 0:  # in the user namespace bwrap adds; as root the worker drops to it
        args += ["--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID)]
    for name, value in FIXED_ENV.items():
        args += ["--setenv", name, value]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths = [(p, False) for p in SYSTEM_DIRS] + [(p, True) for p in python]
    paths += [(str(p), True) for p in read_only if str(p) != "/"]
    args += _mount_args(paths)
    return [*args, "--chdir", str(cwd or "/tmp"), "--", *argv]


def _mount_args(paths: list[tuple[str, bool]]) -> list[str]:
    """A `--dir` (mode 0755) for each parent of the bound paths, then one read-only bind
    per outermost path (`--ro-bind-try` where `required` is False)."""
    outermost: list[tuple[str, bool]] = []
    for path, required in sorted(set(paths), key=lambda p: (_depth(p[0]), p[0])):
        if not any(_inside(path, other) for other, _ in outermost):
            outermost.append((path, required))
    parents = {str(a) for path, _ in outermost for a in PurePath(path).parents}
    args = []
    for parent in sorted(parents - {"/", "/tmp"}, key=lambda p: (_depth(p), p)):
        args += ["--perms", "0755", "--dir", parent]
    for path, required in outermost:
        args += ["--ro-bind" if required else "--ro-bind-try", path, path]
    return args


def _depth(path: str) -> int:
    return len(PurePath(path).parts)


def _inside(path: str, folder: str) -> bool:
    return PurePath(path).is_relative_to(folder)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
