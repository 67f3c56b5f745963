"""Seed a room with many messages straight through the store, before the server starts.

Contents are 6-14 words drawn uniformly from a fixed 40-word vocabulary (so each word is in
roughly a fifth of the messages: a *common* search word), and about 1 % of the messages also
carry one *rare* word. The generator is seeded, so every run writes the same room.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.store import migrate
from pal.store.db import open_database
from pal.store.rooms import create_room
from pal.store.tables import messages

VOCABULARY = (
    "build deploy review merge branch commit release patch server client "
    "database query index cache latency error warning retry timeout socket "
    "agent room thread topic message delivery inbox mention route digest "
    "green red blue yellow quick slow small large early late"
).split()
COMMON_WORD = "deploy"
RARE_WORD = "zanzibar"
RARE_SHARE = 0.01
SENDERS = ("alice", "bob", "carol", "dave", "erin")
BATCH = 5_000


@dataclass
class SeededRoom:
    name: str
    room_id: str
    count: int
    min_id: int
    max_id: int
    common_word: str
    common_hits: int
    rare_word: str
    rare_hits: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _rows(room_id: str, count: int, rng: random.Random) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(seconds=count)
    rows = []
    for i in range(count):
        words = rng.choices(VOCABULARY, k=rng.randint(6, 14))
        if rng.random() < RARE_SHARE:
            words.insert(rng.randrange(len(words) + 1), RARE_WORD)
        rows.append(
            {
                "room_id": room_id,
                "topic_id": None,
                "parent_id": None,
                "sender": SENDERS[i % len(SENDERS)],
                "sender_kind": "human",
                "content": " ".join(words).capitalize() + ".",
                "mentions": [],
                "source": None,
                "client_msg_id": None,
                "created_at": start + timedelta(seconds=i),
            }
        )
    return rows


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(messages.insert(), rows)  # executemany


def _id_range(conn: Connection, room_id: str) -> tuple[int, int]:
    query = sa.select(sa.func.min(messages.c.id), sa.func.max(messages.c.id)).where(
        messages.c.room_id == room_id
    )
    low, high = conn.execute(query).one()
    return int(low), int(high)


def _analyze(conn: Connection) -> None:
    conn.exec_driver_sql("ANALYZE")


def seed_room(db_url: str, name: str, count: int, *, seed: int = 42) -> SeededRoom:
    """Migrate the database at ``db_url`` and fill a new room ``name`` with ``count`` messages.

    On PostgreSQL the tables are ANALYZEd afterwards, as autovacuum would do on a live
    server; SQLite is left as pal leaves it (pal never runs ANALYZE there).
    """
    started = time.perf_counter()
    migrate.upgrade(db_url)
    db = open_database(db_url)
    try:
        room = db.write_sync(create_room, name)
        rng = random.Random(seed)
        rows = _rows(room["id"], count, rng)
        for i in range(0, count, BATCH):
            db.write_sync(_insert, rows[i : i + BATCH])
        if db.dialect == "postgresql":
            db.write_sync(_analyze)
        low, high = db.read_sync(_id_range, room["id"])
    finally:
        db.close()
    return SeededRoom(
        name=name,
        room_id=room["id"],
        count=count,
        min_id=low,
        max_id=high,
        common_word=COMMON_WORD,
        common_hits=sum(COMMON_WORD in _words(r["content"]) for r in rows),
        rare_word=RARE_WORD,
        rare_hits=sum(RARE_WORD in _words(r["content"]) for r in rows),
        seconds=time.perf_counter() - started,
    )
