"""The python grader's sandbox: each way out that worked before bubblewrap must fail.

Every escape is a real grader file (`escapes.yaml` + `escapes.py`), loaded with the sandbox
required; with the sandbox removed these tests fail (the escapes succeed on the host).
They skip only where bubblewrap cannot run, and fail there under RLHFKIT_REQUIRE_SANDBOX
(CI).
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from processes import all_gone, living_with
from rlhfkit.errors import ConfigError
from rlhfkit.graders import load_grader, sandbox

ESCAPES = r'''
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FORGED = b'{"ok": true, "value": 7.5}\n'


def report(**info):
    """Hand facts back to the test (an error's message is the grader's only way out)."""
    raise RuntimeError("REPORT " + json.dumps(info))


def connect_mro(port):
    real = __import__("socket").socket.__mro__[2]  # _socket.socket, under the guard's class
    real(2, 1).connect(("127.0.0.1", port))


def connect_reimport(port):
    del sys.modules["_socket"], sys.modules["socket"]
    import _socket  # a fresh copy of the module, without the guard

    _socket.socket(2, 1).connect(("127.0.0.1", port))


def connect_ctypes(port):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)
    address = (2).to_bytes(2, "little") + port.to_bytes(2, "big") + bytes([127, 0, 0, 1])
    address = ctypes.create_string_buffer(address + bytes(8), 16)
    if libc.connect(fd, address, 16) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def connect_subprocess(port):
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(done.stderr.strip().splitlines()[-1])


def forge():
    """Write a forged reply on every descriptor of this process, and on each one reopened
    through /proc/self/fd. (Never other processes' descriptors: if a regression ran this
    outside the sandbox, as root, that would write into every process on the host.)"""
    for fd in range(256):
        try:
            os.write(fd, FORGED)
        except OSError:
            pass
    for path in Path("/proc/self/fd").iterdir():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, FORGED)
            os.close(fd)
        except OSError:
            pass


def processes_with(marker):
    found = 0
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found += marker in path.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            pass
    return found


def leave_processes(marker):
    """A setsid child and a double-forked grandchild, both running `sleep MARKER`."""
    subprocess.Popen(["sleep", marker], start_new_session=True)
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", marker])
        os._exit(0)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while processes_with("sleep " + marker) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return processes_with("sleep " + marker)


def start_many(count):
    children = []
    try:
        for _ in range(count):
            children.append(subprocess.Popen(["sleep", "30"]))
    except OSError as exc:
        return len(children), type(exc).__name__
    finally:
        for child in children:
            child.kill()
    return len(children), None


def write_everywhere(item):
    outcomes = {}
    for path in (item["outside"], str(Path(__file__).with_name("planted.txt")), item["tmp"]):
        try:
            Path(path).write_text("escaped")
            outcomes[path] = "written"
        except OSError as exc:
            outcomes[path] = type(exc).__name__
    return outcomes


def grade(sample, item):
    mode = item["mode"]
    if mode.startswith("connect_"):
        globals()[mode](item["port"])
        return 1.0
    if mode == "passwd":
        return float(len(open("/etc/passwd").read()) > 0)
    if mode == "files":
        data = Path(__file__).with_name("data.txt").read_text()
        report(data=data, outcomes=write_everywhere(item), etc=os.path.exists("/etc"))
    if mode == "user":
        status = Path("/proc/self/status").read_text().splitlines()
        capabilities = dict(line.split(":\t") for line in status if line.startswith("Cap"))
        shell = subprocess.run("id -u", shell=True, capture_output=True, text=True).stdout
        report(uid=os.getuid(), shell=shell.strip(), capabilities=capabilities)
    if mode == "leave":
        return leave_processes(item["marker"]) / 4
    if mode == "leave_and_hang":
        leave_processes(item["marker"])
        print("left both", flush=True)
        while True:
            pass
    if mode == "forge":
        forge()
        return 0.0
    if mode == "peek":  # list (only list) the descriptors of every other process
        listed = []
        for path in Path("/proc").glob("[0-9]*/fd"):
            try:
                os.listdir(path)
                listed.append(path.parent.name)
            except OSError:
                pass
        report(me=os.getpid(), listed=listed)
    if mode == "limits":
        started, error = start_many(200)
        try:
            Path("/tmp/big").write_bytes(bytes(17 * 1024 * 1024))
            written = "written"
        except OSError as exc:
            written = exc.strerror
        report(started=started, error=error, big_file=written)
    if mode == "memory":
        return len(bytearray(2 * 1024**3))
    return float(item["value"])
'''

REPORT = "RuntimeError: REPORT "


def sandbox_or_skip() -> None:
    """Skip where bubblewrap cannot run; a failure under RLHFKIT_REQUIRE_SANDBOX (CI)."""
    problem = sandbox.unavailable()
    if problem is None:
        return
    if os.environ.get("RLHFKIT_REQUIRE_SANDBOX"):
        pytest.fail(f"the grader sandbox cannot run: {problem} (apt-get install bubblewrap)")
    pytest.skip(f"the grader sandbox cannot run here: {problem}")


def grader_folder(parent: Path, source: str, yaml_text: str) -> Path:
    """A folder holding grader.yaml and its code, readable by the sandbox's user."""
    folder = parent / "grader"
    folder.mkdir()
    (folder / "code.py").write_text(source)
    (folder / "grader.yaml").write_text(yaml_text)
    (folder / "data.txt").write_text("next to the grader")
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder / "grader.yaml"


@pytest.fixture(scope="module")
def escapes(tmp_path_factory):
    sandbox_or_skip()
    yaml_text = "type: python\nname: escapes\nsource_file: code.py\ntimeout_seconds: 3\n"
    yaml_text += "memory_limit_mb: 256\n"
    path = grader_folder(tmp_path_factory.mktemp("escapes"), ESCAPES, yaml_text)
    with load_grader(path, sandbox="required") as grader:
        yield grader


def only_error(result) -> dict:
    assert result.reward == 0.0
    (error,) = result.errors
    return error


def reported(result) -> dict:
    """The facts a grader handed back with report()."""
    message = only_error(result)["message"]
    assert message.startswith(REPORT), message
    return json.loads(message.removeprefix(REPORT))


def marker() -> str:
    return f"{600 + random.random():.9f}"  # a `sleep` command line no other process has


@pytest.fixture
def tag():
    """A marker for `sleep` processes a grader starts; any left are killed afterwards."""
    value = marker()
    yield value
    for pid in living_with(f"sleep {value}"):
        os.kill(pid, signal.SIGKILL)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


# ---------------------------------------------------------------- network


@pytest.mark.parametrize(
    "mode", ["connect_mro", "connect_reimport", "connect_ctypes", "connect_subprocess"]
)
def test_no_way_reaches_a_listener_on_the_host(escapes, mode):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        error = only_error(escapes.grade("x", {"mode": mode, "port": port}))
        with pytest.raises(BlockingIOError):  # nothing ever connected
            listener.accept()
    finally:
        listener.close()
    assert error["kind"] == "python_runtime"
    assert "refused" in error["message"] or "unreachable" in error["message"]


# ---------------------------------------------------------------- files and user


def test_etc_passwd_is_not_there(escapes):
    error = only_error(escapes.grade("x", {"mode": "passwd"}))
    assert error["type"] == "FileNotFoundError"


def test_files_outside_the_private_tmp_cannot_be_written(escapes, tmp_path):
    name = f"rlhfkit-sandbox-{marker()}"
    outside, host_tmp = tmp_path / "escaped.txt", Path("/tmp") / name
    item = {"mode": "files", "outside": str(outside), "tmp": str(host_tmp)}
    facts = reported(escapes.grade("x", item))
    assert facts["data"] == "next to the grader"  # its own folder is readable
    assert facts["etc"] is False
    outcomes = facts["outcomes"]
    assert outcomes[str(outside)] == "FileNotFoundError"  # the host's folders are not there
    assert outcomes[escapes.filename.replace("code.py", "planted.txt")] in (
        "OSError",  # read-only file system
        "PermissionError",
    )
    assert outcomes[str(host_tmp)] == "written"  # into the sandbox's own /tmp
    assert not outside.exists()
    assert not Path(escapes.filename).with_name("planted.txt").exists()
    escaped = host_tmp.exists()
    host_tmp.unlink(missing_ok=True)
    assert not escaped


def test_the_code_runs_as_nobody_without_capabilities(escapes):
    facts = reported(escapes.grade("x", {"mode": "user"}))
    assert facts["uid"] == sandbox.SANDBOX_ID
    assert facts["shell"] == str(sandbox.SANDBOX_ID)  # os.system / a shell: the same user
    masks = {name: int(mask, 16) for name, mask in facts["capabilities"].items()}
    masks.pop("CapBnd")  # the bounding set: what exec of a setuid file could give (nosuid here)
    assert masks == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}


# ---------------------------------------------------------------- environment

ENV_PROBE = """
from pathlib import Path

def grade(sample, item):
    if "MY_JUDGE_API_KEY" in __import__("os").environ:
        return 1.0
    for path in Path("/proc").glob("[0-9]*/environ"):  # what processes started with
        try:
            if b"MY_JUDGE_API_KEY" in path.read_bytes():
                return 0.5
        except OSError:
            pass
    return 0.0
"""


@pytest.mark.parametrize(("declared", "reward"), [(False, 0.0), (True, 1.0)])
def test_a_variable_reaches_the_code_only_when_declared(tmp_path, declared, reward):
    sandbox_or_skip()
    yaml_text = "type: python\nsource_file: code.py\n" + (
        "env: [MY_JUDGE_API_KEY]\n" if declared else ""
    )
    path = grader_folder(tmp_path, ENV_PROBE, yaml_text)
    done = run_cli(
        "grader", "run", str(path), "--sample", "x", "--sandbox", "required",
        MY_JUDGE_API_KEY="sk-not-for-graders",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["reward"], result["errors"]) == (reward, [])


def test_a_declared_variable_missing_here_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_JUDGE_API_KEY", raising=False)
    path = grader_folder(tmp_path, ENV_PROBE, "type: python\nsource_file: code.py\nenv: [X, 1]\n")
    with pytest.raises(ConfigError, match=r"env: must be a list of variable names"):
        load_grader(path, sandbox="off")
    path.write_text("type: python\nsource_file: code.py\nenv: [MY_JUDGE_API_KEY]\n")
    with pytest.raises(ConfigError, match=r"env: MY_JUDGE_API_KEY not set in the environment"):
        load_grader(path, sandbox="off")


# ---------------------------------------------------------------- processes


def test_processes_the_code_leaves_are_killed_when_its_call_ends(escapes, tag):
    result = escapes.grade("x", {"mode": "leave", "marker": tag})
    assert (result.reward, result.errors) == (0.5, [])  # both were running inside
    assert all_gone(f"sleep {tag}")
    assert escapes.grade("x", {"mode": "value", "value": 0.25}).reward == 0.25


def test_processes_the_code_leaves_are_killed_at_the_timeout(escapes, tag):
    error = only_error(escapes.grade("x", {"mode": "leave_and_hang", "marker": tag}))
    assert error["kind"] == "python_timeout" and "left both" in error["output"]
    assert all_gone(f"sleep {tag}")


def test_no_process_outlives_the_command(tmp_path, tag):
    sandbox_or_skip()
    path = grader_folder(tmp_path, ESCAPES, "type: python\nsource_file: code.py\n")
    item = json.dumps({"mode": "leave", "marker": tag})
    done = run_cli("grader", "run", str(path), "--sample", "x", "--item", item)
    assert json.loads(done.stdout)["reward"] == 0.5, done.stderr
    assert not living_with(f"sleep {tag}")


def test_process_count_and_file_size_are_limited(escapes):
    facts = reported(escapes.grade("x", {"mode": "limits"}))
    assert facts["started"] < 64 and facts["error"] == "BlockingIOError"
    assert facts["big_file"] == "File too large"


def test_memory_over_the_limit_is_a_memory_error_and_the_worker_survives(escapes):
    escapes.grade("x", {"mode": "value", "value": 0.5})
    pid = escapes._worker.process.pid
    error = only_error(escapes.grade("x", {"mode": "memory"}))  # 2 GiB against 256 MiB
    assert (error["kind"], error["type"]) == ("python_runtime", "MemoryError")
    assert escapes.grade("x", {"mode": "value", "value": 0.5}).reward == 0.5
    assert escapes._worker.process.pid == pid


# ---------------------------------------------------------------- the reward


def test_a_forged_reply_on_every_descriptor_does_not_become_the_reward(escapes):
    error = only_error(escapes.grade("x", {"mode": "forge"}))  # grade() returns 0.0
    assert (error["kind"], error["type"]) == ("python_worker", "ForgedReply")
    assert '{"ok": true, "value": 7.5}' in error["output"]  # on stderr: text only
    assert escapes.grade("x", {"mode": "value", "value": 0.75}).reward == 0.75


def test_the_code_cannot_reach_the_descriptors_of_the_worker_processes(escapes):
    facts = reported(escapes.grade("x", {"mode": "peek"}))
    assert facts["listed"] == [str(facts["me"])]  # its own only: not the relay's, the zygote's


@pytest.mark.parametrize(("value", "reward"), [(5.0, 1.0), (-2.0, 0.0), (1.0, 1.0), (0.0, 0.0)])
def test_values_outside_0_1_are_clamped_and_recorded(escapes, value, reward):
    result = escapes.grade("x", {"mode": "value", "value": value})
    assert result.reward == reward
    if 0.0 <= value <= 1.0:
        assert result.errors == []
    else:
        (error,) = result.errors
        assert error["kind"] == "python_out_of_range"
        assert f"returned {value:g}, outside [0, 1]" in error["message"]


# ---------------------------------------------------------------- without bubblewrap

HALF = "def grade(sample, item):\n    return 0.5\n"


def test_without_bubblewrap_auto_warns_in_one_line_and_grades(tmp_path):
    path = grader_folder(tmp_path, HALF, "type: python\nsource_file: code.py\n")
    done = run_cli("grader", "run", str(path), "--sample", "x", RLHFKIT_BWRAP="/no/such/bwrap")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reward"] == 0.5
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("warning: python graders run without a sandbox (/no/such/bwrap")
    for uncontained in ("network", "files", "environment", "processes"):
        assert uncontained in line


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_without_bubblewrap_required_is_an_error(tmp_path, how):
    path = grader_folder(tmp_path, HALF, "type: python\nsource_file: code.py\n")
    args = ["grader", "run", str(path), "--sample", "x"]
    env = {"RLHFKIT_BWRAP": "/no/such/bwrap", "RLHFKIT_GRADER_SANDBOX": "required"}
    if how == "flag":
        args += ["--sandbox", "required"]
        env["RLHFKIT_GRADER_SANDBOX"] = "auto"
    done = run_cli(*args, **env)
    assert done.returncode == 2
    assert "must run in the sandbox (sandbox mode required), but /no/such/bwrap" in done.stderr
    assert done.stdout == ""


def test_an_unknown_sandbox_mode_is_a_config_error(monkeypatch):
    monkeypatch.setenv("RLHFKIT_GRADER_SANDBOX", "strict")
    with pytest.raises(ConfigError, match="RLHFKIT_GRADER_SANDBOX='strict' is not a sandbox"):
        load_grader({"type": "python", "source": "grade = lambda s, i: 1"})
