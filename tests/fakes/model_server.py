"""A scripted fake of the OpenAI Responses API on loopback, for driving the real codex CLI.

codex (0.171.0) talks to its model provider with ``POST /v1/responses`` and reads the answer as
server-sent events (see ../shared/reference/codex-offline.md). This server plays the model in a
fixed two-step dance per conversation turn:

1. the request's ``input`` ends with a user message (no ``function_call_output`` after the last
   user message): answer with a ``function_call`` to ``exec_command`` whose ``cmd`` is the next
   command of the script (``"login": false``, so codex runs ``/bin/bash -c CMD``);
2. a ``function_call_output`` follows the last user message: answer with a final assistant
   message (``FINAL_TEXT``).

The script is a list of commands (one per user turn, in order; the last one is repeated when the
list runs out) or a callable ``(turn_index, request_body) -> cmd``. Every request is recorded
(headers and parsed JSON body) in :attr:`ModelServer.requests` so tests can assert what codex
sent, e.g. that a resumed thread replays the first conversation. Stdlib only.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Script = Sequence[str] | Callable[[int, dict[str, Any]], str]

FINAL_TEXT = "done"
MODEL = "gpt-5.5"  # a slug built into codex 0.171.0 (an unknown one adds an error item)
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


@dataclass
class RecordedRequest:
    """One request codex made: path, headers (lower-case names) and the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    answer: str = ""  # "function_call", "message", or "error: ..." (what the fake sent back)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> list[dict[str, Any]]:
        items = self.body.get("input") if isinstance(self.body, dict) else None
        return items if isinstance(items, list) else []


def user_texts(items: list[dict[str, Any]]) -> list[str]:
    """The ``input_text`` strings of the user messages in a request's ``input``, in order."""
    texts = []
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts.append(str(part.get("text", "")))
    return texts


def wants_final_answer(items: list[dict[str, Any]]) -> bool:
    """True when a ``function_call_output`` comes after the last user message."""
    last_user = -1
    for index, item in enumerate(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            last_user = index
    return any(item.get("type") == "function_call_output" for item in items[last_user + 1 :])


def _sse(event: str, data: dict[str, Any]) -> bytes:
    payload = {"type": event, **data}
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


class ModelServer:
    """The fake model on 127.0.0.1 (a free port), served from a background thread.

    ``commands`` is the script (see the module docstring); ``final_text`` is the assistant's
    closing message. Use :meth:`start` (returns the base URL ending in ``/v1``) and :meth:`stop`,
    or the object as a context manager.
    """

    def __init__(self, commands: Script, *, final_text: str = FINAL_TEXT) -> None:
        self.commands = commands
        self.final_text = final_text
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._turns = itertools.count()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the model server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"model": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-model", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def responses(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/responses`` requests, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/responses")]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_command(self, body: dict[str, Any]) -> str:
        turn = next(self._turns)
        if callable(self.commands):
            return self.commands(turn, body)
        if not self.commands:
            raise ValueError("the model server's script has no commands")
        return self.commands[min(turn, len(self.commands) - 1)]

    def _answer(self, body: dict[str, Any]) -> tuple[str, list[bytes]]:
        """The name of the answer and its SSE events for one request body."""
        n = next(self._ids)
        response_id = f"resp_{n}"
        raw = body.get("input")
        items = [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else []
        if wants_final_answer(items):
            kind = "message"
            item: dict[str, Any] = {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{n}",
                "content": [{"type": "output_text", "text": self.final_text}],
            }
        else:
            kind = "function_call"
            args = {"cmd": self._next_command(body), "login": False}
            item = {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "name": "exec_command",
                "arguments": json.dumps(args),
            }
        events = [
            _sse("response.created", {"response": {"id": response_id}}),
            _sse("response.output_item.added", {"output_index": 0, "item": item}),
            _sse("response.output_item.done", {"output_index": 0, "item": item}),
            _sse("response.completed", {"response": {"id": response_id, "usage": USAGE}}),
        ]
        return kind, events


class _Handler(BaseHTTPRequestHandler):
    model: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: the recorded requests are the log

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.model._record(RecordedRequest("GET", self.path, self._headers(), None, "404"))
        self._plain(404, "not found")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        record = RecordedRequest("POST", self.path, self._headers(), body)
        if not self.path.rstrip("/").endswith("/responses") or not isinstance(body, dict):
            record.answer = "404"
            self.model._record(record)
            self._plain(404, "only POST /v1/responses with a JSON body is served here")
            return
        try:
            record.answer, events = self.model._answer(body)
        except Exception as exc:  # a broken script must show up in the test, not hang codex
            record.answer = f"error: {exc!r}"
            self.model._record(record)
            self._plain(500, f"fake model script failed: {exc!r}")
            return
        self.model._record(record)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(event)
        self.wfile.flush()
        self.close_connection = True

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _plain(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


def codex_config(base_url: str, *, model: str = MODEL) -> str:
    """The config.toml that points codex at the fake model (codex-offline.md, "Working
    configuration"): provider ``fake``, no retries, no plugins or analytics, and the
    workspace-write sandbox with network access (so commands reach loopback)."""
    return f"""\
model = "{model}"
model_provider = "fake"
sandbox_mode = "workspace-write"

[sandbox_workspace_write]
network_access = true

[analytics]
enabled = false

[features]
plugins = false
unbounded_connection_retries = false

[model_providers.fake]
name = "fake"
base_url = "{base_url}"
wire_api = "responses"
experimental_bearer_token = "dummy"
request_max_retries = 0
stream_max_retries = 0
"""


def write_codex_home(path: Path, base_url: str, *, model: str = MODEL) -> Path:
    """Create ``path`` (a CODEX_HOME) with the config.toml for the fake model; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(codex_config(base_url, model=model))
    return path
