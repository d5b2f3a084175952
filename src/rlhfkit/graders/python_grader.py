"""`python`: the user's `grade(sample, item) -> float`, run in a separate worker process.

The worker is a fresh `python -I` (the same interpreter, isolated from the environment's
PYTHON* variables and the user site folder) that stays alive across calls. Limits:
- time: `timeout_seconds` per call (default 10); a call over it kills the worker, the
  sample records a `python_timeout` error and the next call starts a new worker.
  Loading the code (its imports) has its own limit, the larger of 30 s and
  `timeout_seconds`.
- memory: `memory_limit_mb` of address space (default 1024, RLIMIT_AS), set before the
  code is loaded; an allocation over it raises MemoryError inside `grade`.
- network: the socket module is replaced in the worker so any connection or name lookup
  raises PermissionError. This is a guard in the process, not a kernel sandbox: code that
  deliberately goes around Python's socket module is not stopped. Run graders you do not
  trust in a container without network.

`sample` is `{"output_text", "output_json"}` (output_json None when the answer is not
JSON) and `item` the dataset row, both plain JSON values. An exception, a timeout, a
value that is not a number (bool counts as 0/1), NaN or inf, or a dying worker is a
recorded error with reward 0.0.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any

from rlhfkit.graders.base import (
    PYTHON_INVALID_VALUE,
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

KEYS = ("source", "source_file", "timeout_seconds", "memory_limit_mb", "image_tag")
"""`image_tag` (OpenAI's sandbox image) is accepted and ignored, so their files load."""


class PythonGrader(PerSampleGrader):
    """Run `grade(sample, item)` from user code in a worker process.

    Args:
        name: the grader's name.
        source: Python code defining `grade(sample, item) -> float`.
        filename: shown in the code's tracebacks (the source file, or `<grader NAME>`).
        timeout_seconds: time limit of one call.
        memory_limit_mb: address-space limit of the worker.
    """

    type = "python"

    def __init__(
        self,
        name: str,
        source: str,
        filename: str,
        timeout_seconds: float = 10.0,
        memory_limit_mb: int = 1024,
    ):
        super().__init__(name)
        self.source = source
        self.filename = filename
        self.timeout_seconds = timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        self._worker: _Worker | None = None
        self._load_error: GradingError | None = None

    def score_one(self, sample: Sample, item: Item) -> float:
        worker = self._ready_worker()
        reply = worker.request({"sample": sample.as_dict(), "item": item}, self.timeout_seconds)
        if not reply.get("ok"):
            error = reply.get("error", {})
            kind = reply.get("kind", PYTHON_RUNTIME)
            raise GradingError(kind, _summary(error), **_details(error, worker))
        value = reply.get("value")
        if not isinstance(value, float) or not math.isfinite(value):
            raise GradingError(
                PYTHON_INVALID_VALUE,
                f"grade() returned {value}; it must return a finite number",
                type="ValueError",
            )
        return value

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
        worker = _Worker()
        setup = {
            "source": self.source,
            "filename": self.filename,
            "memory_limit_mb": self.memory_limit_mb,
        }
        try:
            reply = worker.request(setup, max(LOAD_TIMEOUT, self.timeout_seconds))
        except GradingError as error:  # the worker is stopped already
            message = f"the grader code did not load: {error.message}"
            raise GradingError(PYTHON_WORKER, message, **error.details) from None
        if reply.get("ready"):
            return worker
        error = reply.get("error", {})
        details = _details(error, worker)
        worker.stop()
        message = f"the grader code did not load: {_summary(error)}"
        raise GradingError(PYTHON_WORKER, message, **details)

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def _summary(error: dict[str, Any]) -> str:
    """`Type: message` of an error the worker described."""
    kind, message = error.get("type", "Error"), error.get("message", "")
    return f"{kind}: {message}" if message else kind


def _details(error: dict[str, Any], worker: _Worker) -> dict[str, Any]:
    details = {"type": error.get("type", ""), "traceback": error.get("traceback", "")}
    output = worker.output_tail()
    if output:
        details["output"] = output
    return details


class _Worker:
    """One worker process and its JSON-lines pipe; errors come out as GradingErrors."""

    def __init__(self):
        # the worker's stderr; closed with the worker by _stop_process
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            close_fds=True,
            start_new_session=True,  # its own process group: stopping it stops its children
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
            return json.loads(line)
        except ValueError:
            self.stop()
            raise GradingError(
                PYTHON_WORKER, f"the worker sent a line that is not JSON: {line[:200]!r}"
            ) from None

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
    """Kill the worker's process group (processes the code started too), reap, close."""
    if process.returncode is None:  # not reaped yet, so the group id is still the worker's
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    log.close()


def build(fields: Fields, name: str) -> PythonGrader | None:
    """A PythonGrader from its mapping: `source` or `source_file` (relative to the file)."""
    source, filename = _read_source(fields, name)
    timeout = fields.number("timeout_seconds", 10.0, above=0)
    memory = fields.number("memory_limit_mb", 1024, at_least=64, integer=True)
    fields.text("image_tag", None)
    if source is None or timeout is None or memory is None:
        return None
    return PythonGrader(name, source, filename, float(timeout), int(memory))


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
