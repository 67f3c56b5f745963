"""Deliveries: the durable record that an agent should act on a message.

Statuses: ``pending`` (waiting for a computer) → ``claimed`` → ``acked`` | ``failed``;
``muted`` records a mention of a muted member for its inbox and is never claimed.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import Conflict, NotFound
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import agents, deliveries, sqlite_timestamp, utcnow

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
            "digest_after": None,
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


def get_delivery(conn: Connection, delivery_id: int, *, lock: bool = False) -> dict[str, Any]:
    """The delivery ``delivery_id`` (:class:`NotFound` otherwise). ``lock`` holds its row
    until the transaction ends (``FOR UPDATE`` on PostgreSQL; SQLite has one writer)."""
    query = sa.select(deliveries).where(deliveries.c.id == delivery_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
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


def renew_leases(conn: Connection, *, computer_id: str, daemon_id: str, until: datetime) -> int:
    """Extend to ``until`` the lease of every delivery ``daemon_id`` of ``computer_id`` holds
    (a heartbeat). Returns how many were renewed."""
    result = conn.execute(
        deliveries.update()
        .where(
            deliveries.c.status == "claimed",
            deliveries.c.computer_id == computer_id,
            deliveries.c.claimed_by == daemon_id,
        )
        .values(lease_until=until)
    )
    return result.rowcount or 0


# -- claims ------------------------------------------------------------------------------------
#
# pending → claimed (computer_id, claimed_by = daemon_id, attempt + 1, lease_until)
#         → acked (a run started) | failed | back to pending (fail with retry, lease expiry,
#           the computer going offline: the holder is cleared, the attempt kept).

# The holder columns a release back to ``pending`` clears.
RELEASED = {"computer_id": None, "claimed_by": None, "claimed_at": None, "lease_until": None}


def _describe_holder(delivery: dict[str, Any]) -> str:
    return (
        f"daemon {delivery['claimed_by']!r} of computer {delivery['computer_id']!r} "
        f"(attempt {delivery['attempt']})"
    )


def _held_by(delivery: dict[str, Any], computer_id: str, daemon_id: str) -> bool:
    return bool(delivery["computer_id"] == computer_id and delivery["claimed_by"] == daemon_id)


def claim_delivery(
    conn: Connection,
    delivery_id: int,
    *,
    computer_id: str,
    daemon_id: str,
    lease_seconds: float,
) -> dict[str, Any]:
    """Claim a pending delivery for ``daemon_id`` of ``computer_id``.

    The claim is one conditional ``UPDATE ... WHERE id = :id AND status = 'pending' AND
    <the agent is assigned to the computer> RETURNING``. That is atomic on both backends:
    SQLite runs one writer at a time, and on PostgreSQL a concurrent claimer of the same row
    waits for the first one's row lock, re-checks the WHERE clause against the committed
    row (now ``claimed``) and updates nothing. ``FOR UPDATE SKIP LOCKED`` would only help a
    "claim the next pending one" scan; for a claim by id it would turn that short wait into
    an answer read from a stale snapshot.

    A zero-row update is then explained from the current row: the same daemon's claim again
    answers that claim (idempotent); anything else is :class:`Conflict` (another holder, a
    finished or muted delivery, an agent not assigned to this computer), or
    :class:`NotFound`.
    """
    now = utcnow()
    assigned = sa.exists().where(
        agents.c.key == deliveries.c.agent_key, agents.c.computer_id == computer_id
    )
    row = conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "pending", assigned)
        .values(
            status="claimed",
            computer_id=computer_id,
            claimed_by=daemon_id,
            attempt=deliveries.c.attempt + 1,
            claimed_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(*deliveries.c)
    ).first()
    if row is not None:
        return as_dict(row)
    delivery = get_delivery(conn, delivery_id)
    status = delivery["status"]
    if status == "claimed" and _held_by(delivery, computer_id, daemon_id):
        return delivery
    if status == "claimed":
        raise Conflict(f"delivery {delivery_id} is already claimed by {_describe_holder(delivery)}")
    if status != "pending":
        raise Conflict(f"delivery {delivery_id} is {status}; only a pending delivery is claimed")
    raise Conflict(
        f"agent {delivery['agent_key']!r} of delivery {delivery_id} is not assigned to "
        f"computer {computer_id!r}; only the computer it is assigned to may claim it"
    )


def _holding(
    delivery_id: int, *, computer_id: str, daemon_id: str, attempt: int
) -> sa.ColumnElement[bool]:
    return sa.and_(
        deliveries.c.id == delivery_id,
        deliveries.c.status == "claimed",
        deliveries.c.computer_id == computer_id,
        deliveries.c.claimed_by == daemon_id,
        deliveries.c.attempt == attempt,
    )


def _not_yours(delivery: dict[str, Any], *, daemon_id: str, attempt: int, verb: str) -> Conflict:
    ident = delivery["id"]
    if delivery["status"] != "claimed":
        return Conflict(
            f"cannot {verb} delivery {ident}: it is {delivery['status']} "
            f"(attempt {delivery['attempt']}), not claimed by daemon {daemon_id!r}"
        )
    if delivery["claimed_by"] != daemon_id:
        return Conflict(
            f"cannot {verb} delivery {ident}: it is claimed by {_describe_holder(delivery)}"
        )
    return Conflict(
        f"cannot {verb} delivery {ident}: attempt {attempt} is stale, "
        f"the current claim is {_describe_holder(delivery)}"
    )


def is_acked_by(
    delivery: dict[str, Any], *, computer_id: str, daemon_id: str, attempt: int
) -> bool:
    """Whether ``delivery`` was acked by this daemon's claim ``attempt``."""
    return (
        delivery["status"] == "acked"
        and _held_by(delivery, computer_id, daemon_id)
        and delivery["attempt"] == attempt
    )


def ack_delivery(
    conn: Connection, delivery_id: int, *, computer_id: str, daemon_id: str, attempt: int
) -> dict[str, Any]:
    """Mark the claim ``attempt`` of ``daemon_id`` acked (its run started). Acking the same
    attempt again answers the acked delivery; any other attempt or holder is
    :class:`Conflict`. The holder columns stay, as the record of who ran it."""
    now = utcnow()
    row = conn.execute(
        deliveries.update()
        .where(_holding(delivery_id, computer_id=computer_id, daemon_id=daemon_id, attempt=attempt))
        .values(status="acked", lease_until=None, updated_at=now)
        .returning(*deliveries.c)
    ).first()
    if row is not None:
        return as_dict(row)
    delivery = get_delivery(conn, delivery_id)
    if is_acked_by(delivery, computer_id=computer_id, daemon_id=daemon_id, attempt=attempt):
        return delivery
    raise _not_yours(delivery, daemon_id=daemon_id, attempt=attempt, verb="ack")


def fail_delivery(
    conn: Connection,
    delivery_id: int,
    *,
    computer_id: str,
    daemon_id: str,
    attempt: int,
    error: str,
    retry: bool = False,
) -> dict[str, Any]:
    """End the claim ``attempt`` of ``daemon_id`` with ``error``: ``failed``, or with
    ``retry`` back to ``pending`` for any daemon to claim (the attempt is kept; the next
    claim increments it). Repeating the same fail answers the delivery as it is."""
    now = utcnow()
    values: dict[str, Any] = {"status": "failed", "lease_until": None}
    if retry:
        values = {"status": "pending", **RELEASED}
    row = conn.execute(
        deliveries.update()
        .where(_holding(delivery_id, computer_id=computer_id, daemon_id=daemon_id, attempt=attempt))
        .values(**values, error=error, updated_at=now)
        .returning(*deliveries.c)
    ).first()
    if row is not None:
        return as_dict(row)
    delivery = get_delivery(conn, delivery_id)
    if delivery["attempt"] == attempt and delivery["error"] == error:
        repeated = (
            delivery["status"] == "pending"
            if retry
            else delivery["status"] == "failed" and _held_by(delivery, computer_id, daemon_id)
        )
        if repeated:
            return delivery
    raise _not_yours(delivery, daemon_id=daemon_id, attempt=attempt, verb="fail")


def release_expired_leases(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Return to ``pending`` every claim whose lease ended before ``now`` (its daemon
    stopped heartbeating). Returns the released deliveries' ``id`` and ``agent_key``."""
    result = conn.execute(
        deliveries.update()
        .where(deliveries.c.status == "claimed", deliveries.c.lease_until < now)
        .values(status="pending", **RELEASED, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.agent_key)
    )
    return as_dicts(result)


def release_claims_of(
    conn: Connection, computer_ids: list[str], now: datetime
) -> list[dict[str, Any]]:
    """Return to ``pending`` every claim held by a daemon of ``computer_ids``. Returns the
    released deliveries' ``id`` and ``agent_key``."""
    if not computer_ids:
        return []
    result = conn.execute(
        deliveries.update()
        .where(deliveries.c.status == "claimed", deliveries.c.computer_id.in_(computer_ids))
        .values(status="pending", **RELEASED, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.agent_key)
    )
    return as_dicts(result)
