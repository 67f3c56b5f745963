"""Computers: the machines whose daemons run agents, and their API keys.

A provisioned key (``sk_machine_...``) is stored only as its SHA-256: the key is 256 random
bits, so a slow password hash would add nothing. A legacy computer (``POST /api/daemons``,
``--computer-id`` and ``--computer-secret``) authenticates with ``<id>:<secret>``, stored as
the hash of that pair, so two legacy computers may share a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound, Unauthorized
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import agents, computers, utcnow

KEY_PREFIX = "sk_machine_"
ID_PREFIX = "machine_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_computer_id() -> str:
    return ID_PREFIX + secrets.token_hex(8)


def key_hash(credential: str) -> str:
    """The stored form of a bearer credential (an API key, or ``<id>:<secret>``)."""
    return hashlib.sha256(credential.encode()).hexdigest()


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A computer as the API shows it: never the key hash; ``status`` is ``revoked`` once
    its key is revoked."""
    computer = {k: v for k, v in row.items() if k != "key_hash"}
    if computer.get("revoked_at") is not None:
        computer["status"] = "revoked"
    return computer


def get_computer(conn: Connection, computer_id: str) -> dict[str, Any]:
    """The computer ``computer_id`` (without its key hash); :class:`NotFound` otherwise."""
    if "\x00" in computer_id:  # no computer has one, and PostgreSQL refuses NUL in a query
        raise NotFound("computer", computer_id)
    row = conn.execute(sa.select(computers).where(computers.c.id == computer_id)).first()
    if row is None:
        raise NotFound("computer", computer_id)
    return public(as_dict(row))


def find_by_credential(conn: Connection, credential: str) -> dict[str, Any] | None:
    """The computer whose key (or legacy ``<id>:<secret>``) is ``credential``, or None."""
    row = conn.execute(
        sa.select(computers).where(computers.c.key_hash == key_hash(credential))
    ).first()
    return None if row is None else public(as_dict(row))


def _public_with_agents(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    computer = public(row)
    computer["agents"] = list(
        conn.execute(
            sa.select(agents.c.key).where(agents.c.computer_id == row["id"]).order_by(agents.c.key)
        ).scalars()
    )
    return computer


def create_computer(conn: Connection, name: str, api_key: str) -> dict[str, Any]:
    """Provision a computer (``offline`` until its daemon connects) for ``api_key``, which
    is stored only as its hash."""
    computer_id = new_computer_id()
    row = {
        "id": computer_id,
        "name": name,
        "key_hash": key_hash(api_key),
        "status": "offline",
        "runtimes": [],
        "created_at": utcnow(),
    }
    conn.execute(computers.insert().values(**row))
    return get_computer(conn, computer_id)


def list_computers(conn: Connection) -> list[dict[str, Any]]:
    """Every computer, oldest first, each with ``agents``: the keys assigned to it."""
    rows = as_dicts(conn.execute(sa.select(computers).order_by(computers.c.created_at)))
    assigned: dict[str, list[str]] = {}
    for key, computer_id in conn.execute(
        sa.select(agents.c.key, agents.c.computer_id)
        .where(agents.c.computer_id.is_not(None))
        .order_by(agents.c.key)
    ):
        assigned.setdefault(computer_id, []).append(key)
    return [{**public(row), "agents": assigned.get(row["id"], [])} for row in rows]


def show_computer(conn: Connection, computer_id: str) -> dict[str, Any]:
    """The computer with ``agents`` (assigned keys); :class:`NotFound` otherwise."""
    computer = get_computer(conn, computer_id)
    return _public_with_agents(conn, computer)


def revoke_computer(conn: Connection, computer_id: str) -> dict[str, Any]:
    """Revoke the computer's key: every credential check fails from now on. Repeating it
    keeps the first ``revoked_at``."""
    computer = get_computer(conn, computer_id)
    if computer["revoked_at"] is None:
        conn.execute(
            computers.update()
            .where(computers.c.id == computer_id)
            .values(key_hash=None, revoked_at=utcnow(), status="offline")
        )
    return show_computer(conn, computer_id)


def rotate_key(conn: Connection, computer_id: str, api_key: str) -> dict[str, Any]:
    """Replace the computer's key with ``api_key`` (the old one stops working). A revoked
    computer becomes usable again with the new key."""
    get_computer(conn, computer_id)
    conn.execute(
        computers.update()
        .where(computers.c.id == computer_id)
        .values(key_hash=key_hash(api_key), revoked_at=None)
    )
    return show_computer(conn, computer_id)


def register_legacy(
    conn: Connection, computer_id: str, secret: str, name: str | None = None
) -> dict[str, Any]:
    """The legacy computer ``computer_id`` for ``POST /api/daemons``: created on first use
    with ``secret`` (stored as the hash of ``<id>:<secret>``); later calls must bring the
    same secret. :class:`Unauthorized` for a wrong secret or a revoked computer."""
    wanted = key_hash(f"{computer_id}:{secret}")
    row = conn.execute(sa.select(computers).where(computers.c.id == computer_id)).first()
    if row is None:
        values = {
            "id": computer_id,
            "name": name or computer_id,
            "key_hash": wanted,
            "status": "offline",
            "runtimes": [],
            "created_at": utcnow(),
        }
        try:
            with conn.begin_nested():
                conn.execute(computers.insert().values(**values))
            return get_computer(conn, computer_id)
        except sa.exc.IntegrityError:  # registered concurrently (PostgreSQL): check it
            row = conn.execute(sa.select(computers).where(computers.c.id == computer_id)).first()
            if row is None:
                raise
    existing = as_dict(row)
    if existing["revoked_at"] is not None:
        raise Unauthorized(
            f"computer {computer_id!r} was revoked: provision a new one with "
            "POST /api/computers/provision"
        )
    if existing["key_hash"] is None or not hmac.compare_digest(existing["key_hash"], wanted):
        raise Unauthorized(
            f"the computer secret does not match the one computer {computer_id!r} "
            "registered with: use the same --computer-secret, or another --computer-id"
        )
    if name is not None and name != existing["name"]:
        conn.execute(computers.update().where(computers.c.id == computer_id).values(name=name))
    return get_computer(conn, computer_id)


def mark_seen(
    conn: Connection,
    computer_id: str,
    *,
    connected: bool = False,
    platform: str | None = None,
    version: str | None = None,
    runtimes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Mark the computer ``online`` and seen now (``connected``: a daemon connected now);
    record ``platform``, ``version`` and ``runtimes`` when given. :class:`Unauthorized` for
    a computer revoked since its credential was checked (a revoke racing a heartbeat: the
    heartbeat then renews nothing)."""
    now = utcnow()
    values: dict[str, Any] = {"status": "online", "last_seen_at": now}
    if connected:
        values["connected_at"] = now
    for column, value in (("platform", platform), ("version", version), ("runtimes", runtimes)):
        if value is not None:
            values[column] = value
    # One statement on the heartbeat's path: the update answers the row it wrote.
    row = conn.execute(
        computers.update()
        .where(computers.c.id == computer_id, computers.c.revoked_at.is_(None))
        .values(**values)
        .returning(*computers.c)
    ).first()
    if row is not None:
        return public(as_dict(row))
    get_computer(conn, computer_id)  # NotFound for an unknown id
    raise Unauthorized(
        f"computer {computer_id!r} was revoked: provision a new one with "
        "POST /api/computers/provision, or rotate its key"
    )


_AGENT_FIELDS = (
    agents.c.key,
    agents.c.display_name,
    agents.c.runtime,
    agents.c.description,
    agents.c.config,
)


def assigned_agents(conn: Connection, computer_id: str) -> list[dict[str, Any]]:
    """The agents assigned to the computer, by key, as a daemon needs them:
    ``{key, display_name, runtime, description, config}``."""
    return as_dicts(
        conn.execute(
            sa.select(*_AGENT_FIELDS)
            .where(agents.c.computer_id == computer_id)
            .order_by(agents.c.key)
        )
    )
