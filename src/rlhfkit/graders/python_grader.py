"""`python`: the user's `grade(sample, item) -> float`, run in a sandboxed worker.

The worker (`python_worker.py`, the same interpreter with `python -I`) stays up between
calls: it loads the code once and runs each call in a fresh fork of it. By default it runs
inside bubblewrap (`sandbox.py`), which contains:
- network: none; the sandbox has its own network namespace with only a loopback.
- files: a read-only view of the system and Python folders and of the grader's folder
  (the grader file's folder, also the working directory, and `source_file`'s folder);
  a private writable /tmp of 64 MiB. No /etc, no home folder, nothing else.
- environment: only PATH, LANG, HOME=/tmp, one BLAS/OpenMP thread, and the variables the
  grader names in `env:` (copied from rlhfkit's environment; a missing one is an error).
- user: uid and gid 65534 without capabilities (as root, the worker gives up root on the
  host too; otherwise the invoking user is mapped to 65534 in a user namespace).
- processes: a PID namespace; processes the code starts are killed when its load or call
  ends, and all of them when the worker stops (timeout, close, or rlhfkit exiting).
Where bubblewrap cannot run, `auto` (the default) warns once and runs the worker on the
host with only the in-process guards below (`required` refuses, `off` skips the sandbox).

Limits, in the sandbox or not:
- time: `timeout_seconds` per call (default 10); a call over it kills the worker, the
  sample records a `python_timeout` error and the next call starts a new worker.
  Loading the code (its imports) has its own limit, the larger of 30 s and
  `timeout_seconds`. CPU time is capped about a second above these (RLIMIT_CPU): a
  call over it records a `python_timeout` error too.
- memory: `memory_limit_mb` of address space per process (default 1024, RLIMIT_AS), set
  before the code is loaded; an allocation over it raises MemoryError inside `grade`.
- files written: 16 MiB each (RLIMIT_FSIZE); processes: 64, threads included
  (RLIMIT_NPROC; in the sandbox only).
- network: Python's socket module refuses to connect or resolve names (PermissionError),
  a guard inside the process; on the host, code that goes around it is not stopped.

The reward is what `grade` returns, checked here: a value that is not a number (bool
counts as 0/1), NaN or inf, an exception, a timeout or a dying process is a recorded
error with reward 0.0; a number outside [0, 1] is clamped into it and recorded as a
`python_out_of_range` error. In the sandbox, code inside `grade` cannot write another
call's reward nor talk to rlhfkit: see `python_worker.py` for why.

`sample` is `{"output_text", "output_json"}` (output_json None when the answer is not
JSON) and `item` the dataset row, both plain JSON values.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any

from rlhfkit.graders import sandbox
from rlhfkit.graders.base import (
    PYTHON_INVALID_VALUE,
    PYTHON_OUT_OF_RANGE,
    PYTHON_RUNTIME,
    PYTHON_TIMEOUT,
    PYTHON_WORKER,
    GradingError,
    Item,
    PerSampleGrader,
    Sample,
)
from rlhfkit.graders.fields import Fields

WORKER_SCRIPT = Path(__file__).with_name("python_worker.py")
LOAD_TIMEOUT = 30.0
"""Seconds the code gets to load (module-level statements and imports), at least."""
OUTPUT_TAIL = 2000
"""Characters of the worker's printed output kept in an error entry."""

KEYS = ("source", "source_file", "timeout_seconds", "memory_limit_mb", "env", "image_tag")
"""`image_tag` (OpenAI's sandbox image) is accepted and ignored, so their files load."""
REPLY_KINDS = (PYTHON_RUNTIME, PYTHON_INVALID_VALUE, PYTHON_TIMEOUT, PYTHON_WORKER)
"""The error kinds a worker reply may name; any other is reported as python_worker."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PythonGrader(PerSampleGrader):
    """Run `grade(sample, item)` from user code in a worker process.

    Args:
        name: the grader's name.
        source: Python code defining `grade(sample, item) -> float`.
        filename: shown in the code's tracebacks (the source file, or `<grader NAME>`).
        timeout_seconds: time limit of one call.
        memory_limit_mb: address-space limit of each process of the worker.
        env: environment variables given to the code (name: value).
        sandboxed: run the worker in bubblewrap (`sandbox.command`).
        folders: host folders the code may read in the sandbox; the first is its working
            directory (default /tmp).
    """

    type = "python"

    def __init__(
        self,
        name: str,
        source: str,
        filename: str,
        timeout_seconds: float = 10.0,
        memory_limit_mb: int = 1024,
        env: dict[str, str] | None = None,
        sandboxed: bool = True,
        folders: tuple[Path, ...] = (),
    ):
        super().__init__(name)
        self.source = source
        self.filename = filename
        self.timeout_seconds = timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        self.env = dict(env or {})
        self.sandboxed = sandboxed
        self.folders = folders
        self._worker: _Worker | None = None
        self._load_error: GradingError | None = None

    def score_one(self, sample: Sample, item: Item) -> float:
        worker = self._ready_worker()
        reply = worker.request({"sample": sample.as_dict(), "item": item}, self.timeout_seconds)
        if reply.get("ok") is not True:
            error = _error_fields(reply)
            kind = reply.get("kind") if reply.get("kind") in REPLY_KINDS else PYTHON_WORKER
            raise GradingError(kind, _summary(error), **_details(error, worker))
        return _reward(reply.get("value"))

    def _ready_worker(self) -> _Worker:
        """The running worker, or a new one; a failure to load the code is kept and re-raised
        for every later sample (loading the same code again would fail again)."""
        if self._load_error is not None:
            raise self._load_error
        if self._worker is None or not self._worker.alive:
            self.close()
            try:
                self._worker = self._start_worker()
            except GradingError as error:
                self._load_error = error
                raise
        return self._worker

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._command(), sandbox.FIXED_ENV if self.sandboxed else None)
        load_seconds = max(LOAD_TIMEOUT, self.timeout_seconds)
        setup = {
            "source": self.source,
            "filename": self.filename,
            "memory_limit_mb": self.memory_limit_mb,
            "timeout_seconds": self.timeout_seconds,
            "load_seconds": load_seconds,
            "env": self.env,
        }
        try:
            reply = worker.request(setup, load_seconds)
        except GradingError as error:  # the worker is stopped already
            message = f"the grader code did not load: {error.message}"
            raise GradingError(PYTHON_WORKER, message, **error.details) from None
        if reply.get("ready") is True:
            return worker
        error = _error_fields(reply)
        details = _details(error, worker)
        worker.stop()
        message = f"the grader code did not load: {_summary(error)}"
        raise GradingError(PYTHON_WORKER, message, **details)

    def _command(self) -> list[str]:
        """The worker's command line: in bubblewrap, or on the host."""
        argv = [sys.executable, "-I", str(WORKER_SCRIPT)]
        if not self.sandboxed:
            return argv
        cwd = self.folders[0] if self.folders else None
        return sandbox.command([*argv, "--sandboxed"], [WORKER_SCRIPT, *self.folders], cwd)

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def _reward(value: Any) -> float:
    """The reward for what `grade` returned: a finite number, clamped into [0, 1]."""
    if not isinstance(value, float) or not math.isfinite(value):
        raise GradingError(
            PYTHON_INVALID_VALUE,
            f"grade() returned {value}; it must return a finite number",
            type="ValueError",
        )
    if not 0.0 <= value <= 1.0:
        clamped = min(max(value, 0.0), 1.0)
        raise GradingError(
            PYTHON_OUT_OF_RANGE,
            f"grade() returned {value:g}, outside [0, 1]; the reward is {clamped:g}",
            reward=clamped,
            type="ValueError",
        )
    return value


def _error_fields(reply: dict[str, Any]) -> dict[str, str]:
    """`type`, `message` and `traceback` of an error reply, as strings."""
    error = reply.get("error")
    if not isinstance(error, dict):
        return {}
    return {k: str(error[k]) for k in ("type", "message", "traceback") if k in error}


def _summary(error: dict[str, str]) -> str:
    """`Type: message` of an error the worker described."""
    kind, message = error.get("type", "Error"), error.get("message", "")
    return f"{kind}: {message}" if message else kind


def _details(error: dict[str, str], worker: _Worker) -> dict[str, Any]:
    details = {"type": error.get("type", ""), "traceback": error.get("traceback", "")}
    output = worker.output_tail()
    if output:
        details["output"] = output
    return details


class _Worker:
    """One worker process and its JSON-lines pipe; errors come out as GradingErrors.

    Args:
        argv: the worker's command line.
        env: its environment; None for rlhfkit's own.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None):
        # the worker's stderr; closed with the worker by _stop_process
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            close_fds=True,
            start_new_session=True,  # its own process group: stopping it stops its children
            env=env,
        )
        self._buffer = b""
        self._finalizer = weakref.finalize(self, _stop_process, self.process, self.log)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one message and wait at most `timeout` seconds for the reply line.

        A timeout, a dead worker or a garbled reply stops the worker (`alive` turns False).
        """
        try:
            data = json.dumps(message).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise GradingError(
                PYTHON_WORKER, f"the item cannot be sent to the grader as JSON: {exc}"
            ) from None
        self.log.seek(0)
        self.log.truncate()
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        line = self._read_line(time.monotonic() + timeout)
        if line is None:
            output = self.output_tail()
            self.stop()
            raise GradingError(
                PYTHON_TIMEOUT,
                f"no answer within {timeout:g} s; the worker was killed and will be restarted",
                type="TimeoutError",
                **({"output": output} if output else {}),
            )
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.stop()
            raise GradingError(
                PYTHON_WORKER, f"the worker sent a line that is not a JSON object: {line[:200]!r}"
            )
        return reply

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line from the worker; None at the deadline; GradingError when it dies."""
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._died()
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _died(self) -> GradingError:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        output = self.output_tail()
        self.stop()
        if code is not None and code < 0:
            how = f"killed by signal {_signal_name(-code)}"
        else:
            how = f"exit status {code}"
        return GradingError(
            PYTHON_WORKER,
            f"the worker process died ({how}); it will be restarted",
            type="WorkerDied",
            **({"output": output} if output else {}),
        )

    def output_tail(self) -> str:
        """The end of what the worker printed since the last request."""
        if self.log.closed:
            return ""
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - OUTPUT_TAIL))
        return self.log.read().decode("utf-8", "replace").strip()

    def stop(self) -> None:
        self._finalizer()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _stop_process(process: subprocess.Popen, log: IO[bytes]) -> None:
    """Kill the worker's process group, reap, close. In the sandbox the group is bwrap:
    its death ends the PID namespace and every process in it."""
    if process.returncode is None:  # not reaped yet, so the group id is still the worker's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    log.close()


def build(fields: Fields, name: str) -> PythonGrader | None:
    """A PythonGrader from its mapping: `source` or `source_file` (relative to the file).

    Raises:
        ConfigError: the sandbox is required (`fields.ctx.sandbox`) but cannot run here.
    """
    source, filename = _read_source(fields, name)
    timeout = fields.number("timeout_seconds", 10.0, above=0)
    memory = fields.number("memory_limit_mb", 1024, at_least=64, integer=True)
    env = _read_env(fields)
    if fields.text("image_tag", None) is not None:
        fields.ignored("image_tag", "OpenAI's sandbox image; here the local sandbox runs the code")
    if source is None or timeout is None or memory is None or env is None:
        return None
    folders = [fields.ctx.folder] if fields.ctx.folder is not None else []
    if "source_file" in fields.config:
        folders.append(Path(filename).resolve().parent)
    return PythonGrader(
        name,
        source,
        filename,
        float(timeout),
        int(memory),
        env,
        sandboxed=sandbox.choose(fields.ctx.sandbox),
        folders=tuple(dict.fromkeys(folders)),
    )


def _read_env(fields: Fields) -> dict[str, str] | None:
    """`env`: names of variables whose values the code gets; each must be set here."""
    names = fields.get("env", [])
    if not isinstance(names, list) or not all(
        isinstance(n, str) and _ENV_NAME.fullmatch(n) for n in names
    ):
        fields.problem("env", f"must be a list of variable names like [MY_API_KEY], got {names!r}")
        return None
    missing = [n for n in names if n not in os.environ]
    if missing:
        fields.problem(
            "env", f"{', '.join(missing)} not set in the environment; set it or remove it from env"
        )
        return None
    return {n: os.environ[n] for n in names}


def _read_source(fields: Fields, name: str) -> tuple[str | None, str]:
    has_source, has_file = "source" in fields.config, "source_file" in fields.config
    if has_source == has_file:
        fields.problem("source", "give exactly one of source (the code) or source_file (a path)")
        return None, ""
    if has_source:
        source, filename = fields.text("source"), f"<grader {name}>"
    else:
        path_text = fields.text("source_file")
        if path_text is None:
            return None, ""
        path = fields.ctx.path(path_text)
        if not path.is_file():
            fields.problem("source_file", f"{path} does not exist")
            return None, ""
        try:
            source, filename = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            fields.problem("source_file", f"cannot read {path}: {exc}")
            return None, ""
    if source is None:
        return None, ""
    key = "source" if has_source else "source_file"
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        fields.problem(key, f"the code has a syntax error at line {exc.lineno}: {exc.msg}")
        return None, ""
    except ValueError as exc:  # null bytes
        fields.problem(key, f"the code cannot be parsed: {exc}")
        return None, ""
    if "grade" not in _top_level_names(tree):
        fields.problem(key, "the code must define a function grade(sample, item) -> float")
        return None, ""
    return source, filename


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names bound by the module's top-level statements (def, class, =, import)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names
