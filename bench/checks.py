"""Correctness checks after the load: what the database holds, and what the reads return.

The database is read directly (SQLite opened read-only; PostgreSQL with a plain connection),
not through the API, so the server's own code is not what checks itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import sqlalchemy as sa


def _engine(db_url: str) -> sa.Engine:
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return sa.create_engine(f"sqlite:///file:{url.database}?mode=ro&uri=true")
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


@dataclass
class RoomCounts:
    messages: int
    deliveries: int
    messages_with_wrong_deliveries: int
    min_deliveries: int
    max_deliveries: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_COUNTS = sa.text(
    """
    SELECT count(*) AS messages,
           coalesce(sum(n), 0) AS deliveries,
           coalesce(sum(CASE WHEN n = :agents THEN 0 ELSE 1 END), 0) AS wrong,
           coalesce(min(n), 0) AS lo,
           coalesce(max(n), 0) AS hi
    FROM (
        SELECT m.id, coalesce(d.n, 0) AS n
        FROM messages m
        JOIN rooms r ON r.id = m.room_id
        -- deliveries has no index on message_id alone: count them in one pass, then join
        LEFT JOIN (
            SELECT message_id, count(*) AS n FROM deliveries GROUP BY message_id
        ) d ON d.message_id = m.id
        WHERE r.name = :room
    ) per_message
    """
)


def room_counts(db_url: str, room: str, agents: int) -> RoomCounts:
    engine = _engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(_COUNTS, {"room": room, "agents": agents}).one()
    finally:
        engine.dispose()
    return RoomCounts(
        messages=int(row.messages),
        deliveries=int(row.deliveries),
        messages_with_wrong_deliveries=int(row.wrong),
        min_deliveries=int(row.lo),
        max_deliveries=int(row.hi),
    )


def settled_room_counts(db_url: str, room: str, agents: int, timeout: float = 10) -> RoomCounts:
    """Room counts once the server has finished the writes still queued when wrk stopped."""
    deadline = time.monotonic() + timeout
    last = room_counts(db_url, room, agents)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = room_counts(db_url, room, agents)
        if now == last:
            return now
        last = now
    return last


def check_page(client: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One GET of a read endpoint under test; it must answer 200 with a list of messages."""
    response = client.get(path, params=params)
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages
