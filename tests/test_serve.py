"""`rlhfkit serve` (an OpenAI-compatible endpoint, called with a real HTTP client) and
`rlhfkit chat` (a terminal conversation), on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import requests
from werkzeug.serving import make_server

from rlhfkit.eval.chat import ChatModel
from rlhfkit.eval.serve import ChatServer
from rlhfkit.graders.model_backends import HttpJudge, SamplingParams

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def served():
    server = make_server(
        "127.0.0.1",
        0,
        ChatServer(ChatModel("tiny-random-llama", "fp32", "cpu"), TOKEN),
        threaded=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def post(url: str, body: dict, token: str = TOKEN, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(
        f"{url}/chat/completions", json=body, headers=headers, timeout=120, **kwargs
    )


def test_chat_completions_answer_in_openais_shape_and_stream_the_same_text(served):
    body = {
        "model": "anything",
        "messages": [{"role": "user", "content": "Hi there"}],
        "max_tokens": 6,
        "temperature": 0,
    }
    answer = post(served, body)
    assert answer.status_code == 200
    payload = answer.json()
    assert payload["object"] == "chat.completion" and payload["id"].startswith("chatcmpl-")
    [choice] = payload["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(
        choice["message"]["content"], str
    )
    assert choice["finish_reason"] in ("stop", "length")
    usage = payload["usage"]
    assert usage["completion_tokens"] <= 6 and usage["prompt_tokens"] > 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # the same request streamed: server-sent chunks whose deltas add up to the same text
    with post(served, {**body, "stream": True}, stream=True) as streamed:
        assert streamed.headers["Content-Type"].startswith("text/event-stream")
        events = [
            line[len("data: ") :] for line in streamed.iter_lines(decode_unicode=True) if line
        ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == choice["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert all("usage" not in c for c in chunks)  # only when asked, as OpenAI does
    asked = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with post(served, asked, stream=True) as streamed:
        lines = [line for line in streamed.iter_lines(decode_unicode=True) if line]
    last = json.loads(lines[-2][len("data: ") :])
    assert last["choices"] == [] and last["usage"] == usage
    # seeded sampling is repeatable
    sampled = {**body, "temperature": 1.0, "seed": 5, "max_completion_tokens": 8}
    first, second = (
        post(served, sampled).json()["choices"][0]["message"]["content"] for _ in range(2)
    )
    assert first == second


def test_a_client_that_leaves_mid_answer_frees_the_model_for_the_next(served):
    long = {"messages": [{"role": "user", "content": "Go on"}], "max_tokens": 2000}
    with post(served, {**long, "stream": True}, stream=True) as streamed:
        next(streamed.iter_lines())  # the first chunk, then the client hangs up
    # were the abandoned answer still generating 2000 tokens, these would wait for it
    answers = []

    def ask() -> None:
        short = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        answers.append(post(served, short).status_code)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [200, 200]


def test_the_endpoint_refuses_what_it_cannot_answer_in_openais_error_shape(served):
    assert requests.get(f"{served}/models", timeout=30).status_code == 401
    assert (
        post(served, {"messages": [{"role": "user", "content": "x"}]}, token="wrong").status_code
        == 401
    )
    models = requests.get(
        f"{served}/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert models.json()["data"][0]["id"] == "tiny-random-llama"
    for body, param in (
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "seed": -1}, "seed"),
    ):
        refused = post(served, body)
        assert refused.status_code == 400, body
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, (body, error)
    assert requests.get(f"{served}/nowhere", timeout=30).status_code == 404


def test_rlhfkits_own_http_judge_can_call_a_served_model(served, monkeypatch):
    monkeypatch.setenv("SERVED_TOKEN", TOKEN)
    judge = HttpJudge(
        served, "tiny", "SERVED_TOKEN", SamplingParams(max_completions_tokens=4), (0, 1), 60
    )
    text = judge.complete([("system", "Grade it."), ("user", "An answer.")])
    assert isinstance(text, str) and judge.retries == 0


def test_chat_streams_answers_keeps_the_conversation_and_resets(tmp_path):
    command = [
        sys.executable,
        "-m",
        "rlhfkit.cli",
        "chat",
        "tiny-random-llama",
        "--max-tokens",
        "3",
        "--temperature",
        "0",
        "--dtype",
        "fp32",
    ]
    done = subprocess.run(
        command,
        input="Hello\nAnd then?\n/reset\nHi\n/exit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("chat with tiny-random-llama")
    assert out.count("[cut at max tokens]") == 3  # three messages answered, each cut at 3 tokens
    assert "(new conversation)" in out
