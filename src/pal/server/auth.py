"""Who is calling: the computer behind a daemon's ``Authorization: Bearer`` credential.

Daemon endpoints (connect, heartbeat, the daemon socket, claims, runs) take
:data:`CurrentComputer`. The credential is a provisioned API key (``sk_machine_...``) or, for
legacy daemons, ``<computer_id>:<computer_secret>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from pal.errors import Forbidden, Unauthorized
from pal.server.auth_failures import AuthFailures, client_address
from pal.store import computers as computers_store
from pal.store.db import Database

MISSING = (
    "this endpoint needs a computer API key: send 'Authorization: Bearer sk_machine_...' "
    "(POST /api/computers/provision gives one)"
)
REFUSED = (
    "the computer API key is not valid (mistyped, rotated or revoked): "
    "provision a new one with POST /api/computers/provision"
)


def bearer(connection: HTTPConnection) -> str | None:
    """The bearer credential of a request or WebSocket handshake, if any."""
    header = connection.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


async def authenticate(connection: HTTPConnection) -> dict[str, Any]:
    """The calling computer; :class:`Unauthorized` without a valid, unrevoked credential
    (counted as a failure of the client's address), :class:`TooManyFailures` (429) while
    that address must wait (server/auth_failures.py)."""
    checked: dict[str, Any] | None = connection.scope.get("state", {}).get("pal_computer")
    if checked is not None:  # the admin-token check (server/access.py) looked it up already
        return checked
    credential = bearer(connection)
    if credential is None:
        raise Unauthorized(MISSING)
    failures: AuthFailures = connection.app.state.auth_failures
    address = client_address(connection.scope)
    failures.check(address)
    db: Database = connection.app.state.db
    computer = await db.read(computers_store.find_by_credential, credential)
    if computer is None or computer["status"] == "revoked":
        failures.record(address)
        raise Unauthorized(REFUSED)
    return computer


async def _computer(request: Request) -> dict[str, Any]:
    return await authenticate(request)


CurrentComputer = Annotated[dict[str, Any], Depends(_computer)]


def require_same(computer: dict[str, Any], computer_id: str | None) -> None:
    """Refuse (403) a computer acting on another computer's resource."""
    if computer_id != computer["id"]:
        raise Forbidden(
            f"computer {computer['id']!r} cannot act for computer {computer_id!r}: "
            "use that computer's own API key"
        )
