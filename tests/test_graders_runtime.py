"""Graders that run something: python workers, reward models, judges, embeddings."""

import json
import math
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from processes import all_gone
from rlhfkit.errors import ConfigError
from rlhfkit.graders import load_grader
from rlhfkit.graders.model_backends import judge_score

# ---------------------------------------------------------------- python grader

MODES = """
import os
import sys

def grade(sample, item):
    mode = item.get("mode")
    print("graded", mode)  # goes to stderr, never into the protocol
    if mode == "loop":
        while True:
            pass
    if mode == "raise":
        raise ValueError("boom " + sample["output_text"])
    if mode == "nan":
        return float("nan")
    if mode == "inf":
        return float("inf")
    if mode == "text":
        return "0.5"
    if mode == "memory":
        return len(bytearray(2 * 1024**3))
    if mode == "socket":
        import socket
        socket.create_connection(("127.0.0.1", item["port"]), timeout=1)
    if mode == "urllib":
        import urllib.request
        urllib.request.urlopen("http://127.0.0.1:%d/" % item["port"], timeout=1)
    if mode == "exit":
        os._exit(3)
    if mode == "spawn":
        import subprocess
        subprocess.Popen(["sleep", item["seconds"]])
        print("started sleep", item["seconds"], flush=True)
        while True:
            pass
    if mode == "fake":
        sys.stdout.write('{"ok": true, "value": 99}\\n')
        sys.stdout.flush()
        os.write(1, b'{"ok": true, "value": 98}\\n')
        input()  # stdin is empty for user code: EOFError would be raised
    if mode == "json":
        return sample["output_json"]["n"] + item["bonus"]
    return len(sample["output_text"].split()) / 10
"""


@pytest.fixture(scope="module")
def modes():
    grader = load_grader(
        {
            "type": "python",
            "name": "modes",
            "source": MODES,
            "timeout_seconds": 1,
            "memory_limit_mb": 256,
        }
    )
    yield grader
    grader.close()


def only_error(result):
    assert result.reward == 0.0
    (error,) = result.errors
    assert error["grader"] == "modes"
    return error


def test_python_grader_returns_the_user_value(modes):
    assert modes.grade("one two three", {}).reward == pytest.approx(0.3)  # 3 words / 10
    assert modes.grade('{"n": 0.25}', {"mode": "json", "bonus": 0.5}).reward == 0.75


def test_python_grader_timeout_kills_the_worker_and_the_next_call_works(modes):
    modes.grade("warm", {})
    first_pid = modes._worker.process.pid
    error = only_error(modes.grade("x", {"mode": "loop"}))
    assert error["kind"] == "python_timeout" and "within 1 s" in error["message"]
    assert error["output"] == "graded loop"
    assert modes.grade("a b", {}).reward == pytest.approx(0.2)
    assert modes._worker.process.pid != first_pid


def test_python_grader_timeout_also_stops_processes_the_code_started(modes):
    seconds = f"{600 + random.random():.9f}"  # a command line no other process has
    error = only_error(modes.grade("x", {"mode": "spawn", "seconds": seconds}))
    assert error["kind"] == "python_timeout"
    assert f"started sleep {seconds}" in error["output"]
    assert all_gone(f"sleep {seconds}")  # killed with the worker


def test_python_grader_exception_is_recorded_with_its_traceback(modes):
    error = only_error(modes.grade("now", {"mode": "raise"}))
    assert error["kind"] == "python_runtime"
    assert (error["type"], error["message"]) == ("ValueError", "ValueError: boom now")
    assert error["traceback"].startswith("Traceback (most recent call last):\n")
    assert 'File "<grader modes>", line 12, in grade' in error["traceback"]
    assert 'raise ValueError("boom " + sample["output_text"])' in error["traceback"]
    assert "python_worker.py" not in error["traceback"]
    assert modes.grade("still alive", {}).reward == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("nan", "returned nan"),
        ("inf", "returned inf"),
        ("text", "returned str '0.5'; it must return a number"),
    ],
)
def test_python_grader_refuses_values_that_are_not_finite_numbers(modes, mode, message):
    error = only_error(modes.grade("x", {"mode": mode}))
    assert error["kind"] == "python_invalid_value" and message in error["message"]


def test_python_grader_memory_limit_raises_memory_error_and_the_worker_survives(modes):
    modes.grade("warm", {})
    pid = modes._worker.process.pid
    error = only_error(modes.grade("x", {"mode": "memory"}))  # 2 GiB against a 256 MiB limit
    assert (error["kind"], error["type"]) == ("python_runtime", "MemoryError")
    assert modes.grade("a", {}).reward == pytest.approx(0.1)
    assert modes._worker.process.pid == pid


@pytest.mark.parametrize("mode", ["socket", "urllib"])
def test_python_grader_has_no_network(modes, mode):
    listener = socket.create_server(("127.0.0.1", 0))  # a port that would accept
    try:
        port = listener.getsockname()[1]
        error = only_error(modes.grade("x", {"mode": mode, "port": port}))
    finally:
        listener.close()
    assert error["kind"] == "python_runtime"
    assert "network access is disabled in python graders" in error["message"]


def test_python_grader_worker_death_is_recorded_and_the_worker_restarts(modes):
    error = only_error(modes.grade("x", {"mode": "exit"}))
    assert error["kind"] == "python_worker"
    assert "died (exit status 3)" in error["message"]
    assert modes.grade("a b c d", {}).reward == pytest.approx(0.4)


def test_python_grader_prints_cannot_fake_a_reply(modes):
    error = only_error(modes.grade("x", {"mode": "fake"}))
    assert error["type"] == "EOFError"  # input() saw an empty stdin, not the protocol
    assert '{"ok": true, "value": 99}' in error["output"]
    assert '{"ok": true, "value": 98}' in error["output"]
    assert modes.grade("a", {}).reward == pytest.approx(0.1)


def test_python_grader_close_stops_the_worker():
    grader = load_grader({"type": "python", "name": "one", "source": "grade = lambda s, i: 1"})
    with grader:
        assert grader.grade("x", {}).reward == 1.0
        process = grader._worker.process
    assert process.poll() is not None


def test_python_grader_code_that_fails_to_load_is_recorded_for_every_sample():
    source = (
        "import json\nraise RuntimeError('bad setup')\ndef grade(sample, item):\n    return 1\n"
    )
    with load_grader({"type": "python", "name": "broken", "source": source}) as grader:
        results = grader.grade_batch(["a", "b"], [{}, {}])
    for result in results:
        (error,) = result.errors
        assert error["kind"] == "python_worker"
        assert "did not load: RuntimeError: bad setup" in error["message"]


def test_python_grader_source_file_is_relative_to_the_grader_file(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "length.py").write_text("def grade(sample, item):\n    return 0.5\n")
    path = tmp_path / "length.yaml"
    path.write_text("type: python\nsource_file: code/length.py\n")
    with load_grader(path) as grader:
        assert grader.grade("x", {}).reward == 0.5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "def grade(s, i) return 1"}, "source: the code has a syntax error at line 1"),
        ({"source": "def score(s, i):\n    return 1"}, "must define a function grade"),
        ({"source": "x", "source_file": "a.py"}, "give exactly one of source"),
        ({"source_file": "missing.py"}, "missing.py does not exist"),
        ({"source": "grade = 1", "timeout_seconds": 0}, "timeout_seconds: must be greater than 0"),
        ({"source": "grade = 1", "memory_limit_mb": 8}, "memory_limit_mb: must be at least 64"),
        ({"source": "grade = 1", "memory_limit_mb": 1.5}, "must be an integer"),
    ],
)
def test_python_grader_validation(fields, message):
    with pytest.raises(ConfigError) as info:
        load_grader({"type": "python", "name": "p", **fields})
    assert message in str(info.value)


# ---------------------------------------------------------------- judge score parsing


@pytest.mark.parametrize(
    ("text", "span", "expected"),
    [
        ("Score: 7", (0, 10), 0.7),
        ('{"score": 3, "reason": "2 typos"}', (0, 10), 0.3),
        ('I think so. {"score": 0.9} (out of 1)', (0, 1), 0.9),  # the JSON wins
        ("-1", (-1, 1), 0.0),
        ("4.5 of 5", (1, 5), 0.875),  # (4.5 - 1) / (5 - 1)
    ],
)
def test_judge_score_reads_json_or_the_first_number(text, span, expected):
    assert judge_score(text, span) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [("I cannot tell.", "no score"), ("Score: 11", r"score 11 is outside range \[0, 10\]")],
)
def test_judge_score_failures_are_parse_errors(text, message):
    from rlhfkit.graders.base import GradingError

    with pytest.raises(GradingError, match=message) as info:
        judge_score(text, (0, 10))
    assert info.value.kind == "model_parse"


# ---------------------------------------------------------------- HTTP judge


class JudgeHandler(BaseHTTPRequestHandler):
    """Canned OpenAI-style answers chosen by a keyword in the last message."""

    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeHandler.requests.append((self.path, dict(self.headers), body))
        text = body["messages"][-1]["content"]
        status, payload = 200, None
        if "GOOD" in text:
            payload = {"choices": [{"message": {"role": "assistant", "content": "Score: 8"}}]}
        elif "JSON" in text:
            content = '{"score": 2, "why": "3 mistakes"}'
            payload = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        elif "WORDS" in text:
            payload = {"choices": [{"message": {"role": "assistant", "content": "fine"}}]}
        elif "SHAPE" in text:
            payload = {"error": "no choices here"}
        elif "FAIL" in text:
            status, payload = 500, {"error": "internal"}
        raw = b"<html>not json" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Retries wait 10 ms instead of seconds (the backoff's arithmetic is unchanged)."""
    from rlhfkit.graders import model_backends

    monkeypatch.setattr(model_backends, "RETRY_BASE_SECONDS", 0.01)


@pytest.fixture(scope="module")
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def http_judge(base_url, **extra):
    return load_grader(
        {
            "type": "score_model",
            "name": "judge",
            "model": "judge-model",
            "base_url": base_url,
            "range": [0, 10],
            "input": [
                {"role": "developer", "content": "Grade the answer from 0 to 10."},
                {"role": "user", "content": "{{item.question}}\n{{sample.output_text}}"},
            ],
            **extra,
        }
    )


def test_http_judge_scores_good_json_malformed_and_failing_answers(judge_url, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret-123")
    grader = http_judge(judge_url, api_key_env="JUDGE_KEY", sampling_params={"temperature": 0.2})
    answers = ["GOOD", "JSON", "WORDS", "MALFORMED", "SHAPE", "FAIL"]
    JudgeHandler.requests.clear()
    results = grader.grade_batch(answers, [{"question": "Q?"}] * len(answers))
    assert [r.reward for r in results] == [0.8, 0.2, 0.0, 0.0, 0.0, 0.0]
    assert results[0].errors == results[1].errors == []
    kinds = [r.errors[0]["kind"] for r in results[2:]]
    assert kinds == ["model_parse", "model_server", "model_server", "model_server"]
    assert "no score in the judge's answer: 'fine'" in results[2].errors[0]["message"]
    assert "not json" in results[3].errors[0]["message"]
    assert "HTTP 500" in results[5].errors[0]["message"]
    path, headers, body = next(r for r in JudgeHandler.requests if "GOOD" in str(r[2]))
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret-123"
    assert body["model"] == "judge-model" and body["temperature"] == 0.2
    assert "seed" not in body and "reasoning_effort" not in body  # sent only when given
    assert body["messages"] == [
        {"role": "system", "content": "Grade the answer from 0 to 10."},
        {"role": "user", "content": "Q?\nGOOD"},
    ]


class FlakyJudge(BaseHTTPRequestHandler):
    """Answers by the path: /busy/N: 429 (Retry-After: 0) N times, then a score;
    /down: always 503; /bad: 400."""

    calls: ClassVar[dict[str, int]] = {}

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        route = self.path.split("/")[1]
        FlakyJudge.calls[self.path] = FlakyJudge.calls.get(self.path, 0) + 1
        status, headers = 200, {}
        if route == "busy" and FlakyJudge.calls[self.path] <= int(self.path.split("/")[2]):
            status, headers = 429, {"Retry-After": "0"}
        elif route == "down":
            status = 503
        elif route == "bad":
            status = 400
        content = "Score: 7" if status == 200 else "try later"
        raw = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(raw))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_http_judge_asks_again_after_rate_limits_and_server_errors_and_counts(monkeypatch):
    from rlhfkit.graders import model_backends

    server = HTTPServer(("127.0.0.1", 0), FlakyJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        busy = http_judge(f"{base}/busy/2")
        assert busy.grade("GOOD", {"question": "Q"}).reward == 0.7
        assert FlakyJudge.calls["/busy/2/chat/completions"] == 3
        assert busy.backend.retries == 2
        # always overloaded: MAX_RETRIES repeats, then the error says how often it asked
        down = http_judge(f"{base}/down").grade("GOOD", {"question": "Q"})
        assert down.reward == 0.0 and down.errors[0]["kind"] == "model_server"
        asked = model_backends.MAX_RETRIES + 1
        assert f"HTTP 503 from {base}/down/chat/completions" in down.errors[0]["message"]
        assert f"(asked {asked} times)" in down.errors[0]["message"]
        assert FlakyJudge.calls["/down/chat/completions"] == asked
        # a request the server refuses as malformed is not repeated
        bad = http_judge(f"{base}/bad").grade("GOOD", {"question": "Q"})
        assert "HTTP 400" in bad.errors[0]["message"] and "asked" not in bad.errors[0]["message"]
        assert FlakyJudge.calls["/bad/chat/completions"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_http_judge_gets_openai_seed_and_reasoning_effort(judge_url, caplog):
    params = {"seed": 11, "reasoning_effort": "minimal"}
    with caplog.at_level("WARNING", logger="rlhfkit.graders.load"):
        grader = http_judge(judge_url, sampling_params=params)
    assert caplog.records == []  # an HTTP judge uses both: nothing ignored
    JudgeHandler.requests.clear()
    assert grader.grade("GOOD", {"question": "Q"}).reward == 0.8
    body = JudgeHandler.requests[0][2]
    assert (body["seed"], body["reasoning_effort"]) == (11, "minimal")


def test_http_judge_unreachable_or_missing_key_is_recorded(judge_url, monkeypatch):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = http_judge(f"http://127.0.0.1:{port}").grade("GOOD", {"question": "Q"})
    assert result.reward == 0.0 and result.errors[0]["kind"] == "model_server"
    assert "cannot reach" in result.errors[0]["message"]
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    result = http_judge(judge_url, api_key_env="NO_SUCH_KEY").grade("GOOD", {"question": "Q"})
    assert "NO_SUCH_KEY, which is not set" in result.errors[0]["message"]


def test_judge_template_error_skips_the_request(judge_url):
    JudgeHandler.requests.clear()
    result = http_judge(judge_url).grade("GOOD", {})  # no item.question
    assert result.errors[0]["kind"] == "invalid_variable"
    assert JudgeHandler.requests == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": []}, "input: must be a list of messages"),
        ({"input": [{"role": "bot", "content": "x"}]}, "input.0.role: 'bot' is not allowed"),
        ({"input": [{"role": "system", "content": "x"}]}, "needs at least one user message"),
        ({"input": [{"role": "user", "content": "{{it.x}}"}]}, "input.0.content: unknown variable"),
        ({"range": [1, 0]}, "range: must be [lo, hi]"),
        ({"sampling_params": {"top_p": 2}}, "sampling_params.top_p: must be at most 1"),
        ({"sampling_params": {"seed2": 1}}, "sampling_params.seed2: unknown key"),
        ({"model": "./no/such/folder"}, "is not a model folder"),
        ({"model": "reward_model:missing"}, "is not a reward-model folder"),
        ({"timeout_seconds": 5}, "only an HTTP judge (with base_url) takes it"),
        ({"base_url": "file:///etc"}, "base_url: must be an http:// or https:// URL"),
    ],
)
def test_score_model_validation(fields, message):
    config = {
        "type": "score_model",
        "name": "j",
        "model": "tiny-random-llama",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
        **fields,
    }
    with pytest.raises(ConfigError) as info:
        load_grader(config)
    assert message in str(info.value)


# ---------------------------------------------------------------- local models


def test_local_judge_with_a_random_model_records_a_parse_error():
    grader = load_grader(
        {
            "type": "score_model",
            "name": "judge",
            "model": "tiny-random-llama",
            "sampling_params": {"max_completions_tokens": 6},
            "input": [{"role": "user", "content": "Rate 0-1: {{sample.output_text}}"}],
        }
    )
    results = grader.grade_batch(["a fine answer", "another"], [{}, {}])
    for result in results:
        assert result.reward == 0.0
        assert result.errors[0]["kind"] == "model_parse"


def test_reward_model_grader_scores_like_the_reward_model(tiny_reward_model, tmp_path):
    from rlhfkit.data.records import Message
    from rlhfkit.models.scoring import RewardTextScorer

    answers = ["Tea is nice.", "I do not know tea.", "Tea is a drink made from leaves."]
    items = [{"q": "What is tea?"}] * 3
    scorer = RewardTextScorer.load(tiny_reward_model)
    prompt = (Message("user", "What is tea?"),)
    raw = [r for (r,) in scorer.score([prompt] * 3, [[a] for a in answers])]
    assert len({round(r, 4) for r in raw}) == 3  # the answers score differently

    path = tmp_path / "rm.yaml"  # relative folder: from the grader file's folder
    path.write_text(
        f"type: score_model\nmodel: reward_model:{tiny_reward_model.name}\n"
        "input: [{role: user, content: '{{item.q}}'}]\n"
    )
    (tmp_path / tiny_reward_model.name).symlink_to(tiny_reward_model)
    results = load_grader(path).grade_batch(answers, items)
    sigmoid = [1 / (1 + math.exp(-r)) for r in raw]
    assert [r.reward for r in results] == pytest.approx(sigmoid, abs=1e-5)

    low, high = min(raw), max(raw)
    ranged = load_grader(
        {
            "type": "score_model",
            "name": "rm",
            "model": f"reward_model:{tiny_reward_model}",
            "range": [low, (low + high) / 2],
            "input": [{"role": "user", "content": "{{item.q}}"}],
        }
    ).grade_batch(answers, items)
    # (r - lo) / (hi - lo): the lowest maps to 0, the highest is clamped to 1
    assert ranged[raw.index(low)].reward == pytest.approx(0.0, abs=1e-6)
    assert ranged[raw.index(high)].reward == 1.0


# ---------------------------------------------------------------- cosine


def cosine_grader():
    return load_grader(
        {
            "type": "text_similarity",
            "name": "cos",
            "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}",
            "evaluation_metric": "cosine",
        }
    )


def test_cosine_matches_the_sentence_transformers_readme():
    # the similarity matrix printed in the sentence-transformers README for all-MiniLM-L6-v2
    grader = cosine_grader()
    answers = ["It's so sunny outside!", "He drove to the stadium."]
    results = grader.grade_batch(answers, [{"reference": "The weather is lovely today."}] * 2)
    assert [r.reward for r in results] == pytest.approx([0.6660, 0.1046], abs=5e-4)


def test_cosine_similarity_of_minilm_embeddings():
    grader = cosine_grader()
    reference = {"reference": "A kitten is sitting on a rug."}
    answers = [
        "A kitten is sitting on a rug.",
        "A cat sits on the mat.",
        "Stock markets fell sharply today after the bank raised interest rates again.",
    ]
    same, paraphrase, unrelated = (r.reward for r in grader.grade_batch(answers, [reference] * 3))
    assert same == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > 0.5 > 0.2 > unrelated >= 0.0
    # one at a time (no padding) gives the same numbers: padding is masked out of the mean
    assert grader.grade(answers[2], reference).reward == pytest.approx(unrelated, abs=1e-5)
    assert grader.grade(answers[1], reference).reward == pytest.approx(paraphrase, abs=1e-5)
    missing = grader.grade_batch(["x", "y"], [{}, reference])
    assert missing[0].errors[0]["kind"] == "invalid_variable" and missing[1].errors == []
