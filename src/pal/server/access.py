"""The admin token (DESIGN.md section 9): who may use the admin and control API.

A server that binds only a loopback address stays open, as the seed's curl examples assume
(PAL_AUTH=auto). One that other hosts can reach (PAL_HOST=0.0.0.0, a LAN address, ...), or any
server with PAL_AUTH=token, lets a request through only with one of:

* ``Authorization: Bearer <admin token>``: the console, curl, scripts;
* ``Authorization: Bearer <computer API key>``: daemons, and ``pal cli`` through them; it
  cannot use the admin-only endpoints (:data:`ADMIN_ONLY`: agents, provisioning, keys);
* the workbench's session cookie (:data:`SESSION_COOKIE`), set by ``POST
  /api/workbench/login`` for the admin token. It is HttpOnly, SameSite=Strict, Secure over
  HTTPS, and signed with the token (changing the token ends every session). A request that
  changes something must also come from the workbench's own origin.

The token itself (where it lives, how it is made) is :mod:`pal.admin_token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from pal.config import Settings
from pal.server.auth_failures import AuthFailures, TooManyFailures, client_address
from pal.server.responses import ORJSONResponse
from pal.store import computers as computers_store
from pal.store.db import Database

SESSION_COOKIE = "pal_session"
SESSION_SECONDS = 7 * 24 * 3600

# Paths anyone may fetch: the health check, the API description, the workbench's page (it
# shows the login form without a session), its files, the login itself, artifact contents
# (their unguessable URL is the capability).
PUBLIC = re.compile(
    r"^/(health|openapi\.json|docs|docs/oauth2-redirect|redoc)?$"
    r"|^/(static|artifacts)/"
    r"|^/api/workbench/(login|logout)$"
)
# What a computer API key cannot do: change agents, computers and keys (it may read them),
# or use Lark and its users at all.
ADMIN_WRITES = re.compile(
    r"^/api/agents(/onboard|/[^/]+(/assignment)?)?$"
    r"|^/api/computers/(provision|[^/]+/(revoke|rotate))$"
)
ADMIN_ONLY = re.compile(r"^/api/lark(-users)?(/.*)?$")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

ASK = (
    "this pal server asks for the admin token ({why}): send 'Authorization: Bearer <token>' "
    "with the token from $PAL_HOME/admin.token on the server (or PAL_ADMIN_TOKEN); "
    "the console sends it by itself"
)
WRONG = (
    "the admin token or API key is not valid: use the token in $PAL_HOME/admin.token on the "
    "server (or PAL_ADMIN_TOKEN), or a computer API key that is not revoked"
)


def why_required(settings: Settings) -> str:
    if settings.auth == "token":
        return "PAL_AUTH=token"
    return f"it listens on {settings.host}, which other hosts can reach"


# -- workbench sessions ------------------------------------------------------------------------


def _signature(token: str, expires: int) -> str:
    digest = hmac.new(token.encode(), f"pal-session:{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def sign_session(token: str, now: float | None = None) -> str:
    """A session cookie value for the workbench, valid for :data:`SESSION_SECONDS`."""
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    return f"{expires}.{_signature(token, expires)}"


def valid_session(token: str, value: str, now: float | None = None) -> bool:
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature.encode(), _signature(token, expires).encode())


def same_origin(headers: dict[bytes, bytes]) -> bool:
    """Whether a browser request came from the page's own origin (the CSRF check for a
    cookie session): ``Origin``'s host is ``Host``, or ``Sec-Fetch-Site`` says so."""
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    host = headers.get(b"host")
    if origin is None or host is None:
        return False
    return urlsplit(origin.decode("latin-1")).netloc == host.decode("latin-1")


def cookie_session(headers: dict[bytes, bytes]) -> str | None:
    """The session cookie's value in a request's ``Cookie`` header, if any."""
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


# -- the middleware ----------------------------------------------------------------------------


class AdminAuth:
    """Refuses (401/403) what the caller may not do, when the settings ask for the token;
    429 for a bearer credential from an address that failed too often.

    A computer API key is checked here (one lookup) and the computer is left in
    ``scope["state"]["pal_computer"]`` for the daemon endpoints' own check.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The only WebSocket is the daemon socket, which checks its computer key itself.
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        settings: Settings = state.settings
        if not settings.token_required or PUBLIC.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope, state)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        failures: AuthFailures = state.auth_failures
        wait = failures.retry_after(client_address(scope)) if status == 429 else None
        headers = {"Retry-After": str(wait)} if wait is not None else None
        response = ORJSONResponse({"error": message}, status_code=status, headers=headers)
        await response(scope, receive, send)

    async def _refusal(self, scope: Scope, state: Any) -> tuple[int, str] | None:
        headers = dict(scope["headers"])
        token: str = state.admin_token
        scheme, _, credential = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential:
            # An address that failed too often waits before any credential is checked, so
            # guessing goes no faster than the limit (server/auth_failures.py).
            failures: AuthFailures = state.auth_failures
            address = client_address(scope)
            try:
                failures.check(address)
            except TooManyFailures as exc:
                return 429, exc.message
            if hmac.compare_digest(credential.encode(), token.encode()):
                return None
            db: Database = state.db
            computer = await db.read(computers_store.find_by_credential, credential)
            if computer is None or computer["status"] == "revoked":
                failures.record(address)
                return 401, WRONG
            path = scope["path"]
            if ADMIN_ONLY.match(path) or (
                ADMIN_WRITES.match(path) and scope["method"] not in SAFE_METHODS
            ):
                return 403, (
                    f"{scope['method']} {scope['path']} needs the admin token: a computer "
                    "API key cannot manage agents, computers or Lark"
                )
            scope.setdefault("state", {})["pal_computer"] = computer
            return None
        session = cookie_session(headers)
        if session is not None and valid_session(token, session):
            if scope["method"] in SAFE_METHODS or same_origin(headers):
                return None
            return 403, (
                "a workbench session can change things only from the workbench's own page: "
                "send requests from it, or use 'Authorization: Bearer <admin token>'"
            )
        return 401, ASK.format(why=why_required(state.settings))
