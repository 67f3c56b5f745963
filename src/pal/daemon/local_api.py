"""The daemon's local API on 127.0.0.1:``--local-port``, for ``pal cli``.

Every request needs ``Authorization: Bearer <token>`` (LOCK_DAEMON_TOKEN or the token file;
see :mod:`pal.daemon.token`), else 401. ``GET /health`` reports the daemon's own state and
the server's health; any ``/api/*`` request is forwarded to the server with the computer's
credential and the answer relayed as it is (503 when the server cannot be reached).
"""

from __future__ import annotations

import contextlib
import hmac
import socket
from collections.abc import Callable
from typing import Any

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
HEALTH_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 3
"""Seconds a stopping daemon gives local API requests still being answered."""

Describe = Callable[[], dict[str, Any]]


class PortInUse(Exception):
    """The local port is taken (another daemon, most likely)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BearerAuth:
    """Refuses (401) every request that does not carry the local API token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                message = (
                    "this is the pal daemon's local API: send 'Authorization: Bearer <token>' "
                    "with LOCK_DAEMON_TOKEN or the token in $PAL_HOME/daemon.token"
                )
                await _error(401, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_local_app(api: ServerApi, token: str, describe: Describe) -> ASGIApp:
    """The local API over ``api`` (the computer's server client); ``describe`` gives the
    daemon's state for ``/health``."""

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
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        body = await request.body()
        try:
            answer = await api.send(
                request.method, target.decode("latin-1"), content=body or None, headers=headers
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
    return BearerAuth(app, token)


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
