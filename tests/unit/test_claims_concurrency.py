"""Claims under concurrency: daemons racing for the same deliveries each get a delivery
exactly once, on both backends, through the same store calls the claim endpoint makes; and
the other writes that can race (run starts, legacy registrations, kill requests)."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from pal.errors import Conflict, Unauthorized
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import computers as computers_store
from pal.store import deliveries as deliveries_store
from pal.store import rooms as rooms_store
from pal.store import run_actions as actions_store
from pal.store import runs as runs_store
from pal.store.db import Database
from pal.store.tables import computers, runs, utcnow
from tests.conftest import wait_until

DELIVERIES = 300
DAEMONS = 6
COMPUTER = "machine_race0000000001"


def _post_for_codex(conn: sa.Connection, count: int) -> list[int]:
    """``COMPUTER`` with agent ``codex`` assigned (mode ``all`` in ``general``), and
    ``count`` messages posted there: their delivery ids."""
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
    for i in range(count):
        posted = post_message(conn, NewMessage(room="general", sender="alice", content=f"{i}"))
        ids += [d["id"] for d in posted["deliveries"]]
    return ids


@pytest.fixture
def pending_ids(database: Database) -> list[int]:
    """``DELIVERIES`` pending deliveries of agent ``codex``, assigned to ``COMPUTER``."""

    def setup(conn: sa.Connection) -> list[int]:
        return _post_for_codex(conn, DELIVERIES)

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


# -- run starts racing each other (PostgreSQL: SQLite runs one writer at a time) ------------


def _lock_waiters(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).scalar_one()
        )


@pytest.mark.parametrize("restart", [False, True], ids=["retry", "restart"])
def test_a_run_start_racing_its_own_retry_records_one_run(pg_url, pg_database, restart):
    """A daemon's start (or restart) retried while the first try is still in flight: the
    retry waits for the first and answers its run; one run is recorded, not two."""

    def setup(conn: sa.Connection) -> dict[str, Any]:
        [delivery_id] = _post_for_codex(conn, 1)
        return _claim(conn, delivery_id, "daemon_1")

    delivery = pg_database.write_sync(setup)
    start = functools.partial(
        runs_store.start_run,
        computer_id=COMPUTER,
        delivery_id=delivery["id"],
        attempt=delivery["attempt"],
        daemon_id="daemon_1",
    )
    if restart:
        start = functools.partial(start, restart_of=pg_database.write_sync(start)[0]["id"])
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as first:
            tx = first.begin()
            run, _, created = start(first)
            assert created
            answers: list[Any] = []
            second = threading.Thread(target=lambda: answers.append(pg_database.write_sync(start)))
            second.start()
            wait_until(lambda: _lock_waiters(engine) or not second.is_alive())
            tx.commit()
            second.join(timeout=30)
        again, _, created_again = answers[0]
        assert (again["id"], created_again) == (run["id"], False)
        count = pg_database.read_sync(
            lambda conn: conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.delivery_id == delivery["id"])
            ).scalar_one()
        )
        assert count == (2 if restart else 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("secret", ["same", "other"])
def test_a_legacy_registration_racing_another_of_the_same_computer(pg_url, pg_database, secret):
    """Two legacy daemons registering the same new computer id at once: the first wins;
    the second then checks its secret against the first's (same: welcome; other: 401),
    never a 500."""
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as first:
            tx = first.begin()
            computers_store.register_legacy(first, "old-box", "same")
            answers: list[Any] = []

            def second() -> None:
                try:
                    answers.append(
                        pg_database.write_sync(computers_store.register_legacy, "old-box", secret)
                    )
                except Unauthorized as exc:
                    answers.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            wait_until(lambda: _lock_waiters(engine) or not thread.is_alive())
            tx.commit()
            thread.join(timeout=30)
        if secret == "same":
            assert answers[0]["id"] == "old-box"
        else:
            assert isinstance(answers[0], Unauthorized)
            assert "does not match" in answers[0].message
    finally:
        engine.dispose()


def test_two_kill_requests_at_once_make_one_action(pg_url, pg_database):
    """The workbench's kill button pressed twice at once: one action, answered to both."""

    def setup(conn: sa.Connection) -> int:
        [delivery_id] = _post_for_codex(conn, 1)
        delivery = _claim(conn, delivery_id, "daemon_1")
        run, _, _ = runs_store.start_run(
            conn,
            computer_id=COMPUTER,
            delivery_id=delivery["id"],
            attempt=delivery["attempt"],
            daemon_id="daemon_1",
        )
        return int(run["id"])

    run_id = pg_database.write_sync(setup)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as first:
            tx = first.begin()
            action = actions_store.request_action(first, run_id, "kill", "alice")
            answers: list[Any] = []
            second = threading.Thread(
                target=lambda: answers.append(
                    pg_database.write_sync(actions_store.request_action, run_id, "kill", "bob")
                )
            )
            second.start()
            wait_until(lambda: _lock_waiters(engine) or not second.is_alive())
            tx.commit()
            second.join(timeout=30)
        assert answers[0]["id"] == action["id"]
        assert len(pg_database.read_sync(actions_store.list_for_run, run_id)) == 1
    finally:
        engine.dispose()
