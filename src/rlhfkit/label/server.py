"""`rlhfkit label serve`: the labelling page and its JSON API (standard library only).

Routes (every `/api/` request needs `Authorization: Bearer TOKEN`, else 401):

- `GET /`, `/app.js`, `/app.css`: the page (no data in it).
- `GET /api/next?labeller=NAME`: `{item, progress}`, the labeller's next item (or null).
- `GET /api/item?id=ID&labeller=NAME`: `{item, progress}`, one item with their judgment.
- `POST /api/judgments`, body `{item_id, labeller, choice, comment?, seconds?, strength?}`
  with choice left, right, tie or skip (as shown), and with `strength=true` optionally how
  much better (slightly, clearly, much): `{saved: true, ...}` once committed.

Answers are JSON; an error is `{"error": "..."}` with a 4xx status that says what to fix.
The page sets every text with `textContent` and is served with a Content-Security-Policy
that allows only its own script, so model text can never run as HTML.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import secrets
import signal
import threading
import unicodedata
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.label.guidelines import render_guidelines, with_guidelines
from rlhfkit.label.items import (
    LabelItem,
    items_from_pairs,
    items_from_predictions,
    items_from_run,
    unique_items,
)
from rlhfkit.label.serve_config import LabelServeConfig, PairSource
from rlhfkit.label.store import SHOWN_CHOICES, STRENGTHS, LabelStore

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_COMMENT_CHARS = 2000
MAX_LABELLER_CHARS = 64
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class OpenedStore:
    store: LabelStore
    added: int
    notes: list[str]


def open_store(config: PairSource) -> OpenedStore:
    """Read the pairs (before touching the database), then add them to the store."""
    items, notes = _read_items(config)
    if items is None and not _has_items(config.db):
        raise ConfigError(
            f"{config.db} holds no items yet: give pairs=FILE, run=RUN_DIR or a=FILE b=FILE"
        )
    store = LabelStore(config.db, create=True)
    added = store.add_items(items) if items else 0
    return OpenedStore(store, added, notes)


def _read_items(config: PairSource) -> tuple[list[LabelItem] | None, list[str]]:
    if config.pairs:
        items, warnings = items_from_pairs(config.pairs)
    elif config.run:
        items, warnings = items_from_run(config.run), []
    elif config.a:
        items = items_from_predictions(
            config.a, config.b, config.response_column_a, config.response_column_b
        )
        warnings = []
    else:
        return None, []
    items, repeats = unique_items(items)
    return items, warnings + repeats


def _has_items(db: str) -> bool:
    try:
        return LabelStore(db).count_items() > 0
    except RlhfkitError:
        return False


class LabelServer(ThreadingHTTPServer):
    """The HTTP server; `serve_forever()` runs it, `shutdown()` stops it from another thread."""

    daemon_threads = True
    block_on_close = False
    max_connections = 64
    """Connections served at once; more are closed at once (a flood holds no threads)."""

    def __init__(
        self,
        store: LabelStore | None,
        host: str,
        port: int,
        token: str,
        per_item: int = 0,
        guidelines: str | None = None,
        strength: bool = False,
    ):
        self.store = store  # None until serve() has opened it (after the port is taken)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.token = token
        self.per_item = per_item
        self.strength = strength
        self.page = {
            path: (resources.files("rlhfkit.label").joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in _PAGE_FILES.items()
        }
        if guidelines is not None:  # rendered into the page once, before it is served
            page, kind = self.page["/"]
            rubric = render_guidelines(guidelines)
            self.page["/"] = (with_guidelines(page, rubric, Path(guidelines).name), kind)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RlhfkitError(
                    f"port {port} on {host} is in use; choose another with port=N "
                    "(port=0 takes any free one)"
                ) from exc
            raise RlhfkitError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="label-server", daemon=True)
        thread.start()
        return thread


def new_token() -> str:
    return secrets.token_urlsafe(24)


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may stay silent (half-open, or a short body)

    def version_string(self) -> str:
        return "rlhfkit-label"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            if url.path.startswith("/api/"):
                self._authorize()
                routes = _API.get(url.path)
                if routes is None:
                    raise HttpError(HTTPStatus.NOT_FOUND, f"no API route {url.path}")
                if method not in routes:
                    raise HttpError(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        f"{url.path} takes {' or '.join(routes)}, not {method}",
                    )
                self._send_json(HTTPStatus.OK, routes[method](self, url.query))
            elif url.path in self.server.page:
                if method != "GET":
                    raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes GET")
                self._send(HTTPStatus.OK, *self.server.page[url.path])
            else:
                raise HttpError(HTTPStatus.NOT_FOUND, f"no page {url.path}")
        except HttpError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except Exception:
            logger.exception("label server: %s %s failed", method, url.path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "server error; see its log"}
            )

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.server.token.encode()
        ):
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong access token: open the URL the server printed "
                "(it ends with #token=...), or send 'Authorization: Bearer TOKEN'",
            )

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self._send(status, data, "application/json; charset=utf-8")

    def _send(self, status: HTTPStatus, data: bytes, kind: str) -> None:
        if status >= 400 and self._unread_body():
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="rlhfkit label"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _unread_body(self) -> bool:
        return not getattr(self, "_body_read", False) and bool(self.headers.get("Content-Length"))

    # ---------------------------------------------------------------- request parts

    def query(self, raw: str, *names: str) -> dict[str, str]:
        try:
            values = parse_qs(
                raw, keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=8
            )
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed query string: {exc}") from exc
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"unknown query parameter {unknown[0]!r}; this route takes {', '.join(names)}",
            )
        for name in names:
            if len(values.get(name, [])) != 1:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"give the query parameter {name} once")
        return {name: values[name][0] for name in names}

    def json_body(self) -> dict[str, Any]:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"send the body as JSON with 'Content-Type: application/json' (got {kind!r})",
            )
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {length} bytes; at most {MAX_BODY_BYTES} are accepted",
            )
        raw = self.rfile.read(int(length))
        self._body_read = True
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body


# ------------------------------------------------------------------ API routes


def _next(handler: _Handler, raw_query: str) -> dict[str, Any]:
    labeller = _labeller(handler.query(raw_query, "labeller")["labeller"])
    server = handler.server
    item_id = server.store.next_item_id(labeller, server.per_item)
    item = None if item_id is None else server.store.view(item_id, labeller)
    return {
        "item": item,
        "progress": server.store.progress(labeller, server.per_item),
        **_options(server),
    }


def _options(server: LabelServer) -> dict[str, Any]:
    """What the page offers besides the choice (`strength`: how much better)."""
    return {"options": {"strength": server.strength}}


def _item(handler: _Handler, raw_query: str) -> dict[str, Any]:
    query = handler.query(raw_query, "id", "labeller")
    labeller = _labeller(query["labeller"])
    server = handler.server
    item = server.store.view(query["id"], labeller)
    if item is None:
        raise HttpError(HTTPStatus.NOT_FOUND, f"no item {query['id']!r}")
    return {
        "item": item,
        "progress": server.store.progress(labeller, server.per_item),
        **_options(server),
    }


def _save(handler: _Handler, raw_query: str) -> dict[str, Any]:
    handler.query(raw_query)
    body = handler.json_body()
    fields = {"item_id", "labeller", "choice", "comment", "seconds", "strength"}
    unknown = sorted(set(body) - fields)
    if unknown:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"unknown field {unknown[0]!r}; a judgment has {', '.join(sorted(fields))}",
        )
    item_id = _string(body, "item_id", 64)
    labeller = _labeller(body.get("labeller"))
    choice = _string(body, "choice", 8)
    if choice not in SHOWN_CHOICES:
        raise HttpError(
            HTTPStatus.BAD_REQUEST, f"choice {choice!r}: use one of {', '.join(SHOWN_CHOICES)}"
        )
    comment = _string(body, "comment", MAX_COMMENT_CHARS, required=False)
    seconds = body.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= 86_400
    ):
        raise HttpError(HTTPStatus.BAD_REQUEST, "seconds must be a number from 0 to 86400")
    server = handler.server
    strength = _strength(body.get("strength"), choice, server.strength)
    try:
        judgment, new = server.store.save(item_id, labeller, choice, comment, seconds, strength)
    except KeyError:
        raise HttpError(HTTPStatus.NOT_FOUND, f"no item {item_id!r}") from None
    return {
        "saved": True,
        "new": new,
        "item_id": item_id,
        "choice": choice,
        "revisions": judgment.revisions,
        "progress": server.store.progress(labeller, server.per_item),
    }


_API = {
    "/api/next": {"GET": _next},
    "/api/item": {"GET": _item},
    "/api/judgments": {"POST": _save},
}


def _string(body: dict[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be a string")
    if len(value) > limit:
        raise HttpError(
            HTTPStatus.BAD_REQUEST, f"{name} is {len(value)} characters; at most {limit}"
        )
    return value


def _strength(value: Any, choice: str, offered: bool) -> str | None:
    """How much better, when given: one of STRENGTHS, with a left/right choice only."""
    if value is None:
        return None
    if not offered:
        raise HttpError(HTTPStatus.BAD_REQUEST, "strength is off on this server (strength=true)")
    if value not in STRENGTHS or choice not in ("left", "right"):
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"strength {value!r}: one of {', '.join(STRENGTHS)}, with choice left or right",
        )
    return value


def _labeller(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HttpError(HTTPStatus.BAD_REQUEST, "labeller must be a non-empty name")
    name = value.strip()
    if len(name) > MAX_LABELLER_CHARS:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"labeller is {len(name)} characters; at most {MAX_LABELLER_CHARS}",
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise HttpError(HTTPStatus.BAD_REQUEST, "labeller must not contain control characters")
    return name


# ------------------------------------------------------------------ the command


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(config: LabelServeConfig) -> int:
    """Open the store, print the URL and token, serve until Ctrl-C (or `server.shutdown()`)."""
    token = config.token or new_token()
    # the port first: a busy port stops here, before the database is created
    server = LabelServer(
        None,
        config.host,
        config.port,
        token,
        config.judgments_per_item,
        config.guidelines,
        config.strength,
    )
    try:
        opened = open_store(config)
    except BaseException:
        server.server_close()
        raise
    server.store = opened.store
    if threading.current_thread() is threading.main_thread():
        # before the URL is printed: a `kill` as soon as it shows must stop cleanly too
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill`, `timeout`, a container stop
        # Ctrl-C stops it even where SIGINT came in ignored (a shell's background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for note in opened.notes:
            print(f"note: {note}", flush=True)
        total = opened.store.count_items()
        print(f"label store {config.db}: {total} items ({opened.added} new)", flush=True)
        if config.host not in LOCAL_HOSTS:
            print(
                f"warning: listening on {config.host}, not only this machine; anyone who "
                "reaches it and has the token can label, and plain HTTP does not hide the token",
                flush=True,
            )
        print(f"open {server.url}#token={token}", flush=True)
        print(f"token={token}", flush=True)
        print("Ctrl-C stops; every judgment is saved when the page says so.", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    judged = len(opened.store.judgments())
    print(f"stopped; {config.db} holds {judged} judgment(s)", flush=True)
    return 0
