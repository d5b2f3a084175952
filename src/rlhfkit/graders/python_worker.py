"""The processes that run a python grader's code. Started by `python_grader` as
`python -I python_worker.py [--sandboxed]`; standard library only (run as a script).

Three kinds of process, so that no process that ever ran the grader's code holds the
channel to rlhfkit:
- the relay (this script's first process) owns the protocol pipes (its original stdin and
  stdout). It never runs the grader's code: it forks the zygote, then for each request
  passes it on and relays exactly one reply line. Sandboxed, it first gives up root (for
  uid and gid 65534) when it has it, and after the load and after every call it kills
  every process of the sandbox's PID namespace but bwrap's init, itself and the zygote.
- the zygote keeps only its two pipes to the relay and stderr, sets the limits (address
  space `memory_limit_mb`, file size 16 MiB, 64 processes when sandboxed, CPU time of
  the load), adds the declared environment variables, blocks Python's socket module and
  runs the code's module level once. For each request it forks a call process and waits
  for it.
- a call process closes the zygote's pipes, lowers its CPU limit to the call's timeout,
  calls `grade(sample, item)` and writes the reply, one JSON line, on a pipe the zygote
  made for this call alone, then exits. The zygote passes the line on when it is the only
  thing on the pipe; more than one line is an error reply, no line reports how the process
  died.

Why a reward cannot be forged in the sandbox (on the host, the code runs as rlhfkit's
user and can open rlhfkit's own pipes through /proc): code inside `grade` (the untrusted
part when a grader runs a model's answer) can write only on its own call's pipe, and
whatever it writes there is its own call's answer: writing a result is the same as
returning one, and the answer is checked like a return value (a finite number, clamped
into [0, 1] by rlhfkit). It cannot reach another call (a fresh fork per call; processes
it leaves are killed when the call ends) nor the relay or the zygote: they are
non-dumpable, so other processes of their user get no /proc/PID/fd, /proc/PID/mem or
ptrace of them; rlhfkit's own process is outside the sandbox's PID namespace. The module
level is the grader author's own code and is trusted as much as `grade` itself: it can
shape the zygote's replies, never the relay's channel to rlhfkit.

Protocol, JSON lines from rlhfkit to the relay:
1. `{"source", "filename", "memory_limit_mb", "timeout_seconds", "load_seconds", "env"}`;
   the answer is `{"ready": true}` or `{"ready": false, "error": {...}}`.
2. Then for each `{"sample", "item"}`: `{"ok": true, "value": float}` or
   `{"ok": false, "kind", "error": {"type", "message", "traceback"}}`.

The grader's code reads an empty stdin and its prints (even from C code) go to stderr,
which rlhfkit keeps as text.
"""

import contextlib
import ctypes
import json
import linecache
import math
import numbers
import os
import resource
import signal
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
REPLY_BYTES = 1 << 16
"""The longest reply line the relay passes on (the call's own replies are far shorter)."""
FILE_BYTES = 16 * 1024 * 1024
PROCESSES = 64
"""RLIMIT_NPROC when sandboxed: processes and threads of the sandbox's user."""
NOBODY = 65534
PR_SET_DUMPABLE = 4
# error kinds, the same strings as in graders/base.py (this script imports nothing of ours)
RUNTIME, INVALID_VALUE = "python_runtime", "python_invalid_value"
TIMEOUT, WORKER = "python_timeout", "python_worker"
# the zygote's pipes to the relay, moved to fixed numbers
REQUESTS_FD, REPLIES_FD = 3, 4


# ---------------------------------------------------------------- the relay


def main():
    sandboxed = sys.argv[1:] == ["--sandboxed"]
    if sandboxed and os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    not_dumpable()
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    setup = json.loads(requests.readline())
    zygote, to_zygote, from_zygote = start_zygote(setup, sandboxed)
    try:
        while relay(from_zygote, replies, zygote, sandboxed):
            request = requests.readline()
            if not request:
                return
            to_zygote.write(request)
            to_zygote.flush()
    except BrokenPipeError:  # the zygote or rlhfkit is gone: rlhfkit sees this process end
        return


def relay(from_zygote, replies, zygote, sandboxed):
    """Pass the zygote's next reply line on; False when it died or sent a line too long."""
    reply = from_zygote.readline(REPLY_BYTES)
    if not reply.endswith(b"\n"):
        return False
    if sandboxed:
        kill_strays(zygote)
    replies.write(reply)
    replies.flush()
    return True


def not_dumpable():
    """Make /proc/PID/fd, /proc/PID/mem and ptrace of this process (and its forks) refused
    to other processes without CAP_SYS_PTRACE."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def start_zygote(setup, sandboxed):
    """Fork the zygote; returns its pid and the relay's ends of its two pipes."""
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    assert min(requests_read, replies_write) > REPLIES_FD  # 3 and 4: the relay's own pipes
    pid = os.fork()
    if pid == 0:
        os.dup2(requests_read, REQUESTS_FD)
        os.dup2(replies_write, REPLIES_FD)
        os.closerange(REPLIES_FD + 1, os.sysconf("SC_OPEN_MAX"))
        zygote(setup, sandboxed)
    os.close(requests_read)
    os.close(replies_write)
    return pid, os.fdopen(requests_write, "wb"), os.fdopen(replies_read, "rb")


def kill_strays(zygote):
    """Kill every process of this PID namespace but init (1), the relay and the zygote."""
    if os.getppid() != 1:  # only ever run as bwrap's command, never on the host
        raise RuntimeError("the relay is not the first process of a PID namespace")
    keep = {1, os.getpid(), zygote}
    while strays := [pid for pid in living_pids() if pid not in keep]:
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def living_pids():
    """Processes in /proc that are not zombies (a killed process is one until reaped)."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):  # not a process, or gone meanwhile
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


# ---------------------------------------------------------------- the zygote


def zygote(setup, sandboxed):
    """Load the code once, then fork a call process per request; never returns."""
    replies = os.fdopen(REPLIES_FD, "wb")
    sys.stdout = sys.stderr  # fd 1 is stderr already; one stream, flushed at each line
    os.environ.update(setup["env"])
    limit_resources(setup["memory_limit_mb"], sandboxed)
    block_network()
    unlimited = resource.getrlimit(resource.RLIMIT_CPU)
    limit_cpu(setup["load_seconds"], final=False)
    try:
        grade = load(setup["source"], setup["filename"])
    except BaseException as exc:  # the code may raise anything at load, SystemExit included
        send(replies, {"ready": False, "error": describe(exc, skip_frames=2)})
        os._exit(0)
    # the zygote's own CPU time grows with every fork: its limit was for the load only
    resource.setrlimit(resource.RLIMIT_CPU, unlimited)
    send(replies, {"ready": True})
    for line in os.fdopen(REQUESTS_FD, "rb"):
        send(replies, run_call(grade, json.loads(line), setup["timeout_seconds"]))
    os._exit(0)


def limit_resources(memory_mb, sandboxed):
    """Limits set before the code is loaded; its call processes inherit them."""
    memory = int(memory_mb) * 1024 * 1024
    set_limit(resource.RLIMIT_AS, memory, memory)
    set_limit(resource.RLIMIT_FSIZE, FILE_BYTES, FILE_BYTES)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it raises OSError instead
    if sandboxed:  # counted per user: outside a sandbox it would count the user's processes
        set_limit(resource.RLIMIT_NPROC, PROCESSES, PROCESSES)


def limit_cpu(seconds, final):
    """SIGXCPU after `seconds` + 1 of CPU time; when `final`, also SIGKILL a second later
    (a hard limit this process cannot lift again)."""
    soft = math.ceil(seconds) + 1
    hard = soft + 1 if final else resource.getrlimit(resource.RLIMIT_CPU)[1]
    set_limit(resource.RLIMIT_CPU, soft, hard)


def set_limit(kind, soft, hard):
    """Set a limit, never above the current hard limit (raising it is not allowed)."""
    _soft, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def block_network():
    """Make every way the socket module opens a connection or resolves a name raise.

    A guard inside the process that gives ordinary code a clear PermissionError; the
    sandbox's empty network namespace is what stops code that goes around it.
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


def load(source, filename):
    """Run the code's module level; its `grade` function."""
    # tracebacks show the lines of code given inline too
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "grader", "__file__": filename}
    exec(compile(source, filename, "exec"), namespace)
    grade = namespace.get("grade")
    if not callable(grade):
        raise NameError("the code defines no function grade(sample, item)")
    return grade


def run_call(grade, request, timeout_seconds):
    """Fork a call process for one request; the reply it wrote, or why there is none."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (REQUESTS_FD, REPLIES_FD, read_end):
            os.close(fd)
        limit_cpu(timeout_seconds, final=True)
        answer(write_end, grade, request)
    os.close(write_end)
    _pid, status = os.waitpid(pid, 0)
    data = drain(read_end)
    os.close(read_end)
    lines = data.splitlines()
    if not lines:
        return died(status, timeout_seconds)
    if len(lines) > 1 or not data.endswith(b"\n"):
        message = f"the grade process wrote {len(lines)} lines on its result pipe, not one reply"
        return failure(WORKER, "ForgedReply", message)
    try:
        reply = json.loads(lines[0])
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return failure(WORKER, "ForgedReply", "the grade process wrote a reply that is not JSON")
    return reply


def drain(fd):
    """Everything on a pipe whose writer has exited (at most REPLY_BYTES)."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < REPLY_BYTES:
        try:
            chunk = os.read(fd, REPLY_BYTES)
        except BlockingIOError:  # a process the call left holds the pipe open
            break
        if not chunk:
            break
        data += chunk
    return data


def died(status, timeout_seconds):
    """The reply for a call process that exited without writing one."""
    if not os.WIFSIGNALED(status):
        return failure(
            WORKER, "WorkerDied", f"the grade process died (exit status {os.WEXITSTATUS(status)})"
        )
    number = os.WTERMSIG(status)
    if number == signal.SIGXCPU:
        message = f"grade() used more than {math.ceil(timeout_seconds) + 1} s of CPU time"
        return failure(TIMEOUT, "TimeoutError", message)
    return failure(
        WORKER, "WorkerDied", f"the grade process died (killed by {signal_name(number)})"
    )


def signal_name(number):
    """`SIGKILL`, or `signal 40` for a signal without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal without a name
        return f"signal {number}"


def failure(kind, error_type, message):
    """An error reply."""
    return {"ok": False, "kind": kind, "error": {"type": error_type, "message": message}}


def send(stream, message):
    """One reply line."""
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


# ---------------------------------------------------------------- a call process


def answer(fd, grade, request):
    """Call grade and write the reply on `fd`; never returns."""
    me = os.getpid()
    reply = call(grade, request)
    if os.getpid() == me:  # a process the code forked comes back here too: it must not answer
        data = json.dumps(reply).encode() + b"\n"
        while data:
            data = data[os.write(fd, data) :]
    with contextlib.suppress(Exception):  # the code may have replaced or closed it
        sys.stdout.flush()
    os._exit(0)


def call(grade, request):
    """The reply for one request: grade's value, or what went wrong."""
    try:
        value = grade(request["sample"], request["item"])
        if not isinstance(value, numbers.Real):
            kind = type(value).__name__
            message = f"grade() returned {kind} {value!r:.200}; it must return a number"
            return failure(INVALID_VALUE, "TypeError", message)
        return {"ok": True, "value": float(value)}
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        return {"ok": False, "kind": RUNTIME, "error": describe(exc, skip_frames=1)}


def describe(exc, skip_frames=0):
    """Type, message and the end of the traceback (less the worker's own first frames)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    message = str(exc)[:TRACEBACK_CHARS]
    return {"type": type(exc).__name__, "message": message, "traceback": text[-TRACEBACK_CHARS:]}


if __name__ == "__main__":
    main()
