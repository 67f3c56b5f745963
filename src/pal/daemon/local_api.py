"""The daemon's local API on 127.0.0.1:``--local-port``, for ``pal cli``.

Every request needs ``Authorization: Bearer <token>`` (LOCK_DAEMON_TOKEN or the token file;
see :mod:`pal.daemon.token`), or a run's own credential (``PAL_RUN_AUTH``, see
:class:`RunCredentials`), else 401. ``GET /health`` reports the daemon's own state and the
server's health; any ``/api/*`` request is forwarded to the server with the computer's
credential and the answer relayed as it is (503 when the server cannot be reached).

A request with a run's credential acts for that run: ``POST /api/messages`` defaults the
room, topic and thread to the delivery's and the sender to the run's agent, and refuses
another sender (403); ``POST /api/artifacts`` gets ``created_by`` (the run's agent, another
is 403), ``run_id`` and, unless given, ``room`` (the run's); ``POST /api/debates`` gets
``created_by`` (the run's agent, another is 403) and, unless given, ``room`` (the run's);
the daemon protocol (claims, run reports, computers) is refused (403).

An artifact upload's body is streamed through to the server as it arrives (with its
content-length), never held in memory; the server enforces its size limit.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pal.daemon.server_api import ServerApi, Unreachable, error_message

HOST = "127.0.0.1"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORWARDED_HEADERS = ("content-type", "accept")
ARTIFACT_UPLOAD = "/api/artifacts"
HEALTH_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 3
"""Seconds a stopping daemon gives local API requests still being answered."""

Describe = Callable[[], dict[str, Any]]


class PortInUse(Exception):
    """The local port is taken (another daemon, most likely)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@dataclass(frozen=True)
class RunScope:
    """What a run's credential may do: post as ``agent_key``, by default in the delivery's
    room, topic and thread."""

    run_id: int
    agent_key: str
    room_id: str
    topic_id: int | None
    parent_id: int | None


class RunCredentials:
    """The credentials of the runs in progress: one random token per run, valid from its
    start until it ends (a process the run left behind cannot use it afterwards)."""

    def __init__(self) -> None:
        self._scopes: dict[str, RunScope] = {}

    def issue(self, scope: RunScope) -> str:
        token = "run_" + secrets.token_urlsafe(32)
        self._scopes[token] = scope
        return token

    def revoke(self, token: str) -> None:
        self._scopes.pop(token, None)

    def find(self, presented: str) -> RunScope | None:
        for token, scope in list(self._scopes.items()):
            if hmac.compare_digest(presented.encode(), token.encode()):
                return scope
        return None


# The daemon protocol: what only the daemon itself does with the computer's credential.
DAEMON_ONLY = re.compile(
    r"^/api/(computers|daemons|daemon/)"
    r"|^/api/deliveries/[^/]+/(claim|ack|fail)$"
    r"|^/api/runs/[^/]+/(pid|finish|output|actions(/.*)?)$"
    r"|^/api/sessions/[^/]+/runtime-session$"
)


def _daemon_only(method: str, path: str) -> bool:
    if method in ("GET", "HEAD"):
        return False  # reading is for everyone (the run's output too)
    path = path.rstrip("/")
    if method == "POST" and path in ("/api/runs", "/api/sessions"):
        return True
    return DAEMON_ONLY.search(path) is not None


class BearerAuth:
    """Refuses (401) every request that carries neither the local API token nor a run's
    credential; a run's requests carry its :class:`RunScope` in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, token: str, runs: RunCredentials | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._runs = runs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                run = self._run_scope(given)
                if run is None:
                    message = (
                        "this is the pal daemon's local API: send 'Authorization: Bearer "
                        "<token>' with LOCK_DAEMON_TOKEN or the token in "
                        "$PAL_HOME/daemon.token (inside a run, PAL_RUN_AUTH; a run's "
                        "credential ends with the run)"
                    )
                    await _error(401, message)(scope, receive, send)
                    return
                scope.setdefault("state", {})["pal_run"] = run
        await self.app(scope, receive, send)

    def _run_scope(self, given: bytes) -> RunScope | None:
        if self._runs is None or not given.startswith(b"Bearer run_"):
            return None
        return self._runs.find(given[len(b"Bearer ") :].decode("latin-1"))


def _as_run(run: RunScope, body: bytes) -> bytes | JSONResponse:
    """A run's ``POST /api/messages`` body with the run's defaults, or a 4xx answer."""
    try:
        message = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "the request body is not JSON")
    if not isinstance(message, dict):
        return _error(422, "the request body must be a JSON object")
    sender = message.get("sender", message.get("from"))
    if sender is not None and sender != run.agent_key:
        return _error(
            403,
            f"run {run.run_id} is a run of agent {run.agent_key!r}: it can only post as "
            f"{run.agent_key!r}, not {sender!r}",
        )
    message.pop("from", None)
    message["sender"] = run.agent_key
    message["sender_kind"] = "agent"
    if message.get("room") is None and message.get("chat") is None:
        message["room"] = run.room_id
        if message.get("topic") is None and run.topic_id is not None:
            message["topic"] = run.topic_id
        if message.get("parent") is None and run.parent_id is not None:
            message["parent"] = run.parent_id
    return json.dumps(message).encode()


def _as_run_debate(run: RunScope, body: bytes) -> bytes | JSONResponse:
    """A run's ``POST /api/debates`` body: started by the run's agent, by default in the
    run's room; a 4xx answer when it names another agent or is not a JSON object."""
    try:
        debate = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "the request body is not JSON")
    if not isinstance(debate, dict):
        return _error(422, "the request body must be a JSON object")
    created_by = debate.get("created_by")
    if created_by is not None and created_by != run.agent_key:
        return _error(
            403,
            f"run {run.run_id} is a run of agent {run.agent_key!r}: its debates are started "
            f"by {run.agent_key!r}, not {created_by!r}",
        )
    debate["created_by"] = run.agent_key
    if debate.get("room") is None and debate.get("chat") is None:
        debate["room"] = run.room_id
    return json.dumps(debate).encode()


def _artifact_query(run: RunScope, query: bytes) -> bytes | JSONResponse:
    """A run's ``POST /api/artifacts`` query with the run's agent, run and (by default)
    room, or a 403 answer when it names another agent or run."""
    params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    for name, value in params:
        if name == "created_by" and value != run.agent_key:
            return _error(
                403,
                f"run {run.run_id} is a run of agent {run.agent_key!r}: its artifacts are "
                f"created by {run.agent_key!r}, not {value!r}",
            )
        if name == "run_id" and value != str(run.run_id):
            return _error(403, f"this is run {run.run_id}: it cannot upload for run {value!r}")
    kept = [(k, v) for k, v in params if k not in ("created_by", "run_id")]
    kept += [("created_by", run.agent_key), ("run_id", str(run.run_id))]
    if not any(k == "room" for k, _ in kept):
        kept.append(("room", run.room_id))
    return urlencode(kept).encode()


def create_local_app(
    api: ServerApi, token: str, describe: Describe, runs: RunCredentials | None = None
) -> ASGIApp:
    """The local API over ``api`` (the computer's server client); ``describe`` gives the
    daemon's state for ``/health``; ``runs`` are the credentials of the runs in progress."""

    async def health(request: Request) -> Response:
        server: Any
        try:
            response = await api.send("GET", "/health", timeout=HEALTH_TIMEOUT)
        except Unreachable as exc:
            server = exc.message
        else:
            try:
                server = response.json() if response.status_code == 200 else None
            except ValueError:
                server = None
            if not isinstance(server, dict):  # an error, or not a pal server's answer
                server = f"HTTP {response.status_code}: {error_message(response)}"
        return JSONResponse({"ok": True, "daemon": describe(), "server": server})

    async def forward(request: Request) -> Response:
        scope = request.scope
        if {".", ".."} & set(scope["path"].split("/")):
            # the server would resolve them, reaching paths outside /api/ (also %2e%2e)
            return _error(404, f"no such local API path {scope['path']!r}: no '.' or '..' parts")
        target = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope["query_string"]
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        upload = request.method == "POST" and scope["path"].rstrip("/") == ARTIFACT_UPLOAD
        run: RunScope | None = scope.get("state", {}).get("pal_run")
        if run is not None and _daemon_only(request.method, scope["path"]):
            return _error(
                403,
                f"{request.method} {scope['path']} is the daemon's own protocol: "
                "a run's credential cannot use it",
            )
        if run is not None and upload:
            scoped = _artifact_query(run, query)
            if isinstance(scoped, Response):
                return scoped
            query = scoped
        if query:
            target += b"?" + query
        content: Any
        if upload:  # the file streams through as it comes, with its declared length
            content = request.stream()
            if length := request.headers.get("content-length"):
                headers["content-length"] = length
        else:
            content = await request.body() or None
            if (
                run is not None
                and request.method == "POST"
                and (scope["path"].rstrip("/") == "/api/messages")
            ):
                rewritten = _as_run(run, content or b"")
                if isinstance(rewritten, Response):
                    return rewritten
                content = rewritten
                headers["content-type"] = "application/json"
            elif (
                run is not None
                and request.method == "POST"
                and scope["path"].rstrip("/") == "/api/debates"
            ):
                rewritten = _as_run_debate(run, content or b"")
                if isinstance(rewritten, Response):
                    return rewritten
                content = rewritten
                headers["content-type"] = "application/json"
        try:
            answer = await api.send(
                request.method, target.decode("latin-1"), content=content, headers=headers
            )
        except Unreachable as exc:  # "the pal daemon cannot reach the server at ...: ..."
            return _error(503, f"the pal daemon {exc.message}")
        except httpx.InvalidURL as exc:  # too long, say: the server could not take it either
            return _error(400, f"cannot forward this request: {exc}")
        relayed = {}
        if "content-type" in answer.headers:
            relayed["content-type"] = answer.headers["content-type"]
        return Response(answer.content, status_code=answer.status_code, headers=relayed)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such local API path {request.url.path!r}: use /health or /api/...")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/api/{rest:path}", forward, methods=METHODS),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return BearerAuth(app, token, runs)


def bind(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:``port``; :class:`PortInUse` when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"cannot serve the local API on {HOST}:{port}: {exc.strerror or exc} "
            "(is another daemon running? pick another --local-port)"
        ) from None
    sock.set_inheritable(False)
    return sock


class LocalServer(uvicorn.Server):
    """uvicorn inside the daemon's event loop; the daemon handles signals itself."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def local_server(app: ASGIApp) -> LocalServer:
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # the daemon's own logging setup formats uvicorn's lines too
        access_log=False,
        lifespan="off",
        server_header=False,
        # a request forwarded to a server that does not answer must not hold up a stop
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
    )
    return LocalServer(config)
