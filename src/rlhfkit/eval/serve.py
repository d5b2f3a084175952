"""`rlhfkit serve MODEL`: an OpenAI-compatible chat endpoint on this machine (Werkzeug).

Routes (every request needs `Authorization: Bearer TOKEN`, else 401):

- `GET /v1/models`: the one model served.
- `POST /v1/chat/completions`: OpenAI's body (`messages`; `max_tokens` or
  `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stream`; other OpenAI fields
  are accepted and not used); the answer as OpenAI's `chat.completion` object, or with
  `"stream": true` as server-sent `chat.completion.chunk` events ending in `data: [DONE]`
  (with `stream_options.include_usage`, a last chunk with no choices carries the usage).

Errors are OpenAI's shape, `{"error": {"message", "type", "param"}}`, with status 400
(what to fix), 401 or 404. Answers are generated one at a time. So a user can talk to a
tuned model as to a hosted one, and `sxs` (`autorater=judge:http://127.0.0.1:PORT/v1`) and
`score_model` graders (`base_url`) can use it as their judge.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from rlhfkit.data.records import Message, text_of_parts
from rlhfkit.errors import ConfigError
from rlhfkit.eval.chat import ROLES, Answer, ChatModel, Sampling

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256


class RequestError(Exception):
    """A request that cannot be answered; `param` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


class ChatServer:
    """The WSGI application: routes, the token check, OpenAI's request and answer shapes."""

    def __init__(self, chat: ChatModel, token: str):
        self.chat = chat
        self.token = token
        self.routes = Map(
            [
                Rule("/v1/models", endpoint="models", methods=["GET"]),
                Rule("/v1/chat/completions", endpoint="completions", methods=["POST"]),
            ]
        )

    def __call__(self, environ: dict, start_response) -> Any:
        return self.respond(Request(environ))(environ, start_response)

    def respond(self, request: Request) -> Response:
        try:
            endpoint, _ = self.routes.bind_to_environ(request.environ).match()
            self._authorize(request)
            if endpoint == "models":
                return _json({"object": "list", "data": [self._model_card()]})
            return self._completions(request)
        except RequestError as error:
            kind = "authentication_error" if error.status == 401 else "invalid_request_error"
            return _error(str(error), kind, error.param, error.status)
        except NotFound:
            return _error(
                f"no route {request.path}; this server has /v1/chat/completions and /v1/models",
                "invalid_request_error",
                None,
                404,
            )
        except HTTPException as error:
            return _error(
                error.description or error.name, "invalid_request_error", None, error.code or 400
            )
        except Exception as error:  # the model failed: OpenAI's shape, the reason logged
            logger.exception("serve: %s failed", request.path)
            return _error(f"the model failed: {error}", "server_error", None, 500)

    def _authorize(self, request: Request) -> None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise RequestError(
                "missing or wrong token: send Authorization: Bearer TOKEN", status=401
            )

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.chat.name, "object": "model", "created": 0, "owned_by": "rlhfkit"}

    def _completions(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object (Content-Type: application/json)")
        messages, sampling = parse_request(body)
        try:
            ids = self.chat.prompt_ids(messages)  # encoded once: checked here, answered below
        except ConfigError as exc:
            raise RequestError(str(exc), "messages") from None
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            stream = self._events(ident, ids, sampling, usage)
            return Response(
                stream, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        answer = self.chat.complete(ids, sampling)
        return _json(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.chat.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": answer.finish_reason,
                    }
                ],
                "usage": _usage(answer),
            }
        )

    def _events(
        self, ident: str, ids: list[int], sampling: Sampling, include_usage: bool
    ) -> Iterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            event = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.chat.name,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "finish_reason": finish}]

        yield chunk(choice({"role": "assistant", "content": ""}))
        try:
            for piece in self.chat.stream(ids, sampling):
                if not isinstance(piece, Answer):
                    yield chunk(choice({"content": piece}))
                    continue
                yield chunk(choice({}, piece.finish_reason))
                if include_usage:  # OpenAI's last chunk: no choices, the token counts
                    yield chunk([], usage=_usage(piece))
        except Exception as error:  # headers are sent: the failure travels as an event
            logger.exception("serve: a streamed answer failed")
            problem = {"message": f"the model failed: {error}", "type": "server_error"}
            yield f"data: {json.dumps({'error': problem})}\n\n"
        yield "data: [DONE]\n\n"


def parse_request(body: dict[str, Any]) -> tuple[list[Message], Sampling]:
    """The messages and sampling settings of a chat-completions body; RequestError names
    the field that is wrong."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list of {role, content}", "messages")
    messages = []
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "developer":
            role = "system"
        if role not in ROLES:
            raise RequestError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, developer",
                f"messages[{i}].role",
            )
        messages.append(Message(role, _content(message.get("content"), f"messages[{i}].content")))
    limit = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    values = {
        "max_tokens": limit,
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "seed": body.get("seed"),
    }
    for name, value in values.items():
        if value is None and name == "seed":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{name} must be a number, got {value!r}", name)
    for name in ("max_tokens", "seed"):
        if values[name] is not None and not isinstance(values[name], int):
            raise RequestError(f"{name} must be a whole number, got {values[name]!r}", name)
    if values["seed"] is not None and not 0 <= values["seed"] < 2**63:
        raise RequestError("seed must be from 0 to 2**63 - 1", "seed")
    sampling = Sampling(**values)
    try:
        sampling.check()
    except ConfigError as exc:
        raise RequestError(str(exc), str(exc).split("=")[0]) from None
    return messages, sampling


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of text parts joined."""
    text = value if isinstance(value, str) else text_of_parts(value)
    if text is None:
        raise RequestError(f"{where} must be a string or a list of text parts", where)
    return text


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json"
    )


def _error(message: str, kind: str, param: str | None, status: int) -> Response:
    return _json(
        {"error": {"message": message, "type": kind, "param": param, "code": None}}, status
    )


def new_token() -> str:
    return secrets.token_urlsafe(24)


def serve(
    chat: ChatModel, host: str = "127.0.0.1", port: int = 8000, token: str | None = None
) -> int:
    """Serve `chat` until Ctrl-C; prints the base URL and the token first."""
    from werkzeug.serving import make_server

    token = token or new_token()
    try:
        server = make_server(host, port, ChatServer(chat, token), threaded=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
            "(0 takes any free one)"
        ) from None
    url = f"http://{host}:{server.server_port}/v1"
    print(f"serving {chat.name} at {url} (OpenAI-compatible chat completions)", flush=True)
    print(f"token={token}", flush=True)
    example = '{"messages": [{"role": "user", "content": "Hello"}]}'
    print(
        f"  curl {url}/chat/completions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{example}'",
        flush=True,
    )
    print("Ctrl-C stops.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
