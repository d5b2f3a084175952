"""The process that runs a python grader's code. Started by `python_grader` as
`python -I python_worker.py`; standard library only (it is run as a script, not imported).

Protocol, JSON lines on the original stdin/stdout:
1. The parent sends `{"source", "filename", "memory_limit_mb"}`. The worker limits its
   address space, blocks the network, runs the source and answers `{"ready": true}` or
   `{"ready": false, "error": {...}}`.
2. Then for each `{"sample", "item"}` it answers `{"ok": true, "value": float}` or
   `{"ok": false, "kind", "error": {"type", "message", "traceback"}}`.

Before user code runs, file descriptors 0 and 1 are moved away: the user's code reads an
empty stdin and its prints (even from C code) go to stderr, so they cannot corrupt the
protocol.
"""

import json
import linecache
import numbers
import os
import resource
import sys
import traceback

NETWORK_NAMES = (
    "create_connection",
    "create_server",
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_ex",
    "gethostbyaddr",
    "getnameinfo",
    "socketpair",
    "fromfd",
)
TRACEBACK_CHARS = 2000
# error kinds, the same strings as in graders/base.py (this script imports nothing of ours)
RUNTIME, INVALID_VALUE = "python_runtime", "python_invalid_value"


def limit_memory(megabytes):
    """Cap the address space (RLIMIT_AS) so a runaway allocation raises MemoryError."""
    limit = int(megabytes) * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def block_network():
    """Make every way the socket module opens a connection or resolves a name raise.

    A guard inside this process, not a kernel sandbox: it stops libraries and ordinary
    code from reaching the network; code that goes around Python's socket module (ctypes,
    a subprocess) is not stopped.
    """
    import _socket
    import socket

    def refuse(*_args, **_kwargs):
        raise PermissionError("network access is disabled in python graders")

    class NoNetworkSocket(socket.socket):
        def __init__(self, *_args, **_kwargs):
            refuse()

    for module in (socket, _socket):
        module.socket = NoNetworkSocket
        for name in NETWORK_NAMES:
            if hasattr(module, name):
                setattr(module, name, refuse)


def describe(exc, skip_frames=0):
    """Type, message and the end of the traceback (less the worker's own first frames)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {"type": type(exc).__name__, "message": str(exc), "traceback": text[-TRACEBACK_CHARS:]}


def call(grade, request):
    try:
        value = grade(request["sample"], request["item"])
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        return {"ok": False, "kind": RUNTIME, "error": describe(exc, skip_frames=1)}
    if not isinstance(value, numbers.Real):
        message = f"grade() returned {type(value).__name__} {value!r:.200}; it must return a number"
        error = {"type": "TypeError", "message": message, "traceback": ""}
        return {"ok": False, "kind": INVALID_VALUE, "error": error}
    return {"ok": True, "value": float(value)}


def main():
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 (kept open for user code)
    sys.stdout = sys.stderr

    def send(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    setup = json.loads(requests.readline())
    limit_memory(setup["memory_limit_mb"])
    block_network()
    source, filename = setup["source"], setup["filename"]
    # tracebacks show the lines of code given inline too
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "grader", "__file__": filename}
    try:
        exec(compile(source, filename, "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise NameError("the code defines no function grade(sample, item)")
    except BaseException as exc:
        send({"ready": False, "error": describe(exc, skip_frames=1)})
        return
    send({"ready": True})
    for line in requests:
        send(call(grade, json.loads(line)))


if __name__ == "__main__":
    main()
