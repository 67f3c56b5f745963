"""Claims under concurrency: daemons racing for the same deliveries each get a delivery
exactly once, on both backends, through the same store calls the claim endpoint makes."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from pal.errors import Conflict
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import rooms as rooms_store
from pal.store.db import Database
from pal.store.tables import computers, utcnow

DELIVERIES = 300
DAEMONS = 6
COMPUTER = "machine_race0000000001"


@pytest.fixture
def pending_ids(database: Database) -> list[int]:
    """``DELIVERIES`` pending deliveries of agent ``codex``, assigned to ``COMPUTER``."""

    def setup(conn: sa.Connection) -> list[int]:
        conn.execute(
            computers.insert().values(
                id=COMPUTER, name="race", status="online", runtimes=[], created_at=utcnow()
            )
        )
        room = rooms_store.ensure_room(conn, "general")
        agents_store.upsert_agent(conn, "codex")
        agents_store.assign_agent(conn, "codex", COMPUTER)
        rooms_store.set_membership(conn, room["id"], "codex", "agent", "all")
        ids = []
        for i in range(DELIVERIES):
            posted = post_message(conn, NewMessage(room="general", sender="alice", content=f"{i}"))
            ids += [d["id"] for d in posted["deliveries"]]
        return ids

    ids: list[int] = database.write_sync(setup)
    assert len(ids) == DELIVERIES
    return ids


def _claim(conn: sa.Connection, delivery_id: int, daemon_id: str) -> dict[str, Any]:
    return deliveries_store.claim_delivery(
        conn, delivery_id, computer_id=COMPUTER, daemon_id=daemon_id, lease_seconds=60
    )


def _check(database: Database, ids: list[int], wins: dict[str, list[int]]) -> None:
    winners = Counter(i for won in wins.values() for i in won)
    assert sorted(winners) == sorted(ids)
    assert set(winners.values()) == {1}, "a delivery was claimed by two daemons"
    rows = database.read_sync(
        lambda conn: deliveries_store.list_deliveries(conn, agent_key="codex", limit=1000)
    )
    holder = {i: daemon for daemon, won in wins.items() for i in won}
    for row in rows:
        assert row["status"] == "claimed"
        assert row["attempt"] == 1
        assert row["claimed_by"] == holder[row["id"]]
    # the race really was a race: more than one daemon won some
    assert sum(1 for won in wins.values() if won) > 1


def test_claims_from_racing_threads_are_each_won_once(database, pending_ids):
    wins: dict[str, list[int]] = {f"daemon_{n}": [] for n in range(DAEMONS)}
    refused: Counter[str] = Counter()
    start = threading.Barrier(DAEMONS)
    errors: list[BaseException] = []

    def daemon(daemon_id: str) -> None:
        order = list(pending_ids)
        random.Random(daemon_id).shuffle(order)
        start.wait()
        for delivery_id in order:
            try:
                got = database.write_sync(_claim, delivery_id, daemon_id)
            except Conflict:
                refused[daemon_id] += 1
                continue
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)
                return
            assert got["claimed_by"] == daemon_id
            wins[daemon_id].append(delivery_id)

    threads = [threading.Thread(target=daemon, args=(d,)) for d in wins]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert sum(refused.values()) == DELIVERIES * (DAEMONS - 1)
    _check(database, pending_ids, wins)


async def test_claims_from_racing_tasks_are_each_won_once(database, pending_ids):
    """The server's own path: many requests awaiting ``Database.write`` at once."""
    wins: dict[str, list[int]] = {f"daemon_{n}": [] for n in range(DAEMONS)}

    async def attempt(delivery_id: int, daemon_id: str) -> None:
        try:
            await database.write(_claim, delivery_id, daemon_id)
        except Conflict:
            return
        wins[daemon_id].append(delivery_id)

    jobs = [attempt(i, d) for i in pending_ids for d in wins]
    random.Random(7).shuffle(jobs)
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=120)
    _check(database, pending_ids, wins)
