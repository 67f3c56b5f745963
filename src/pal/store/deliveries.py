"""Deliveries: the durable record that an agent should act on a message.

Statuses: ``pending`` (waiting for a computer) → ``claimed`` → ``acked`` | ``failed``;
``muted`` records a mention of a muted member for its inbox and is never claimed.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import Conflict, NotFound
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import deliveries, sqlite_timestamp, utcnow

STATUSES = ("pending", "claimed", "acked", "failed", "muted")
ACTIVE = ("pending", "claimed")
# RETURNING the agent key as well lets one multi-row INSERT pair ids with rows; asking for
# parameter order instead makes SQLAlchemy insert row by row on SQLite.
_INSERT = deliveries.insert().returning(
    deliveries.c.id, deliveries.c.agent_key, deliveries.c.message_id
)


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert ``rows`` (agent_key, message_id, room_id, topic_id, reason, status)."""
    if not rows:
        return []
    now = utcnow()
    full = [
        {
            "attempt": 0,
            "computer_id": None,
            "claimed_by": None,
            "error": None,
            "claimed_at": None,
            "lease_until": None,
            **r,
            "created_at": now,
            "updated_at": now,
        }
        for r in rows
    ]
    if conn.dialect.name == "sqlite":
        returned = _insert_sqlite(conn, full)
    else:
        returned = list(conn.execute(_INSERT, full))
    ids = {(key, message): i for i, key, message in returned}
    return [{"id": ids[r["agent_key"], r["message_id"]], **r} for r in full]


_SQLITE_COLUMNS = (
    "agent_key",
    "message_id",
    "room_id",
    "topic_id",
    "reason",
    "status",
    "attempt",
    "created_at",
    "updated_at",
)


def _insert_sqlite(conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
    """One multi-row INSERT ... RETURNING through the driver.

    The hot path of every message post: SQLAlchemy's per-row parameter processing for a
    10-row insert cost more than everything else the post does, so on SQLite the statement
    text is prebuilt (per row count) and the values passed as they are stored.
    """
    sql = _sqlite_insert_sql(len(rows))
    params: list[Any] = []
    for r in rows:
        stamp = sqlite_timestamp(r["created_at"])
        params += (r["agent_key"], r["message_id"], r["room_id"], r["topic_id"], r["reason"])
        params += (r["status"], r["attempt"], stamp, stamp)
    return list(conn.exec_driver_sql(sql, tuple(params)))


@functools.lru_cache(maxsize=64)
def _sqlite_insert_sql(count: int) -> str:
    row = "(" + ", ".join("?" * len(_SQLITE_COLUMNS)) + ")"
    return (
        f"INSERT INTO deliveries ({', '.join(_SQLITE_COLUMNS)}) "
        f"VALUES {', '.join([row] * count)} RETURNING id, agent_key, message_id"
    )


def create_delivery(
    conn: Connection, *, agent_key: str, message: dict[str, Any], reason: str
) -> dict[str, Any]:
    """A delivery made by hand (``POST /api/deliveries``); one per agent and message:
    the unique constraint refuses a second one, made now or concurrently (:class:`Conflict`)."""
    row = {
        "agent_key": agent_key,
        "message_id": message["id"],
        "room_id": message["room_id"],
        "topic_id": message["topic_id"],
        "reason": reason,
        "status": "pending",
    }
    try:  # the savepoint keeps the transaction usable after the refused insert
        with conn.begin_nested():
            return insert_deliveries(conn, [row])[0]
    except sa.exc.IntegrityError:
        raise Conflict(
            f"agent {agent_key!r} already has a delivery for message {message['id']}"
        ) from None


def get_delivery(conn: Connection, delivery_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
    if row is None:
        raise NotFound("delivery", delivery_id)
    return as_dict(row)


def list_deliveries(
    conn: Connection,
    *,
    agent_key: str | None = None,
    status: str | None = None,
    message_id: int | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    query = sa.select(deliveries).where(deliveries.c.id > after)
    if message_id is not None:
        query = query.where(deliveries.c.message_id == message_id)
    if agent_key is not None:
        query = query.where(deliveries.c.agent_key == agent_key)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    return as_dicts(conn.execute(query.order_by(deliveries.c.id).limit(limit)))


def delete_active_deliveries_of(conn: Connection, agent_key: str) -> int:
    result = conn.execute(
        deliveries.delete().where(
            deliveries.c.agent_key == agent_key, deliveries.c.status.in_(ACTIVE)
        )
    )
    return result.rowcount or 0
