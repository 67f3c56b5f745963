"""Hubs joined across server processes over PostgreSQL LISTEN/NOTIFY (server/replicas.py).

Two :class:`Replicas` in one event loop, each with its own hub and its own database handle on
one PostgreSQL database, stand for two server processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from pal.server import replicas as replicas_module
from pal.server.hub import Hub
from pal.server.replicas import Replicas, decode
from pal.store.db import open_database

TIMEOUT = 10


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[Replicas, Replicas]]:
    dbs = [open_database(pg_url), open_database(pg_url)]
    started = [await Replicas.start(Hub(), db) for db in dbs]
    try:
        yield started[0], started[1]
    finally:
        for replicas in started:
            await replicas.stop()
        for db in dbs:
            db.close()


async def next_event(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


async def test_an_event_published_on_one_replica_reaches_the_other_numbered_there(pair):
    a, b = pair
    a.hub.gap()  # a skips a number: from now on the two replicas number events differently
    with a.hub.subscribe() as on_a, b.hub.subscribe() as on_b:
        published = a.hub.publish("delivery", agent_key="codex", delivery_id=41)
        assert published["id"] == 2
        expected = {"kind": "delivery", "agent_key": "codex", "delivery_id": 41}
        assert await next_event(on_b) == {"id": 1, **expected}
        assert await next_event(on_a) == published  # a hears its own event once, locally
        b.hub.publish("delivery", agent_key="codex", delivery_id=42)
        # had a's own notification come back to it, it would be queued before this one
        assert await next_event(on_a) == {"id": 3, **expected, "delivery_id": 42}


async def test_events_keep_their_order_across_replicas(pair):
    a, b = pair
    with b.hub.subscribe(frozenset({"run_output"})) as on_b:
        for seq in range(500):
            a.hub.publish("run_output", run_id=1, seq=seq)
        received = [(await next_event(on_b))["seq"] for _ in range(500)]
    assert received == list(range(500))


def _terminate_listener(conn: sa.Connection, name: str) -> int:
    query = sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = :name AND datname = current_database()"
    )
    return int(conn.execute(query, {"name": name}).scalar_one())


async def test_a_dropped_listener_reconnects_and_its_subscribers_resync(pair, caplog):
    a, b = pair
    with b.hub.subscribe() as on_b:
        before = b.hub.last
        killed = await a.db.write(_terminate_listener, f"pal-listen-{b.origin}")
        assert killed == 1
        # b may have missed events while it was not listening: its subscribers resync...
        assert await next_event(on_b) is None
    assert b.listening
    assert b.hub.since(before) is None  # ...and so does a resume from before the gap
    assert "lost the connection listening" in caplog.text
    with b.hub.subscribe() as on_b:
        a.hub.publish("room", room_id="after")
        assert (await next_event(on_b))["room_id"] == "after"


class FlakyDatabase:
    """Stands for the database in the sender: fails ``failures`` writes, records the rest."""

    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []
        self.written = asyncio.Event()

    async def write(self, fn: Any, payloads: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database is away")
        self.sent += payloads
        self.written.set()


def sent_events(db: FlakyDatabase) -> tuple[bool, list[Any]]:
    decoded = [decode(p) for p in db.sent]
    return any(r for _, r, _ in decoded), [d for _, _, events in decoded for _, d in events]


async def test_a_failed_notify_is_retried_in_order(monkeypatch):
    monkeypatch.setattr(replicas_module, "RETRY_BASE", 0.01)
    db = FlakyDatabase(failures=2)
    replicas = Replicas(Hub(), db)  # type: ignore[arg-type]
    replicas.hub.forward = replicas._enqueue
    sender = asyncio.create_task(replicas._send())
    try:
        for n in range(3):
            replicas.hub.publish("room", room_id=str(n))
        await asyncio.wait_for(db.written.wait(), TIMEOUT)
    finally:
        sender.cancel()
    assert db.failures == 0
    assert sent_events(db) == (False, [{"room_id": "0"}, {"room_id": "1"}, {"room_id": "2"}])


async def test_events_owed_past_the_outbox_limit_become_a_resync(monkeypatch):
    monkeypatch.setattr(replicas_module, "MAX_OUTBOX", 2)
    db = FlakyDatabase(failures=1)
    replicas = Replicas(Hub(), db)  # type: ignore[arg-type]
    for n in range(5):  # nothing sends yet: the queue overflows twice
        replicas._enqueue(replicas.hub.publish("room", room_id=str(n)))
    monkeypatch.setattr(replicas_module, "RETRY_BASE", 0.01)
    sender = asyncio.create_task(replicas._send())
    try:
        await asyncio.wait_for(db.written.wait(), TIMEOUT)
    finally:
        sender.cancel()
    assert sent_events(db) == (True, [{"room_id": "4"}])
    assert replicas._owed_resyncs == 0


def test_health_says_whether_the_replica_listens(client, db_url):
    answer = client.get("/health").json()
    if db_url.startswith("sqlite"):
        assert "replicas" not in answer  # one process: nothing to join
    else:
        assert answer["replicas"] == {"listening": True}
