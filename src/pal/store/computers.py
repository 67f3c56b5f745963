"""Computers: the machines whose daemons run agents."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict
from pal.store.tables import computers


def get_computer(conn: Connection, computer_id: str) -> dict[str, Any]:
    """The computer ``computer_id`` (without its key hash); :class:`NotFound` otherwise."""
    row = conn.execute(sa.select(computers).where(computers.c.id == computer_id)).first()
    if row is None:
        raise NotFound("computer", computer_id)
    computer = as_dict(row)
    computer.pop("key_hash", None)
    return computer
