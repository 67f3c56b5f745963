"""Computers: the machines whose daemons run agents, and their API keys.

A provisioned key (``sk_machine_...``) is stored only as its SHA-256: the key is 256 random
bits, so a slow password hash would add nothing. A legacy computer (``POST /api/daemons``,
``--computer-id`` and ``--computer-secret``) authenticates with ``<id>:<secret>``, stored as
the hash of that pair, so two legacy computers may share a secret.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict
from pal.store.tables import computers

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
