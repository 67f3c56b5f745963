"""The store under concurrency: every write lands, failures are isolated and atomic.

``Database.write`` serialises SQLite writes on one thread with group commit (several jobs per
transaction, each job all-or-nothing); on PostgreSQL each write is its own transaction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from pal.errors import Conflict
from pal.server import routing
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import messages as messages_store
from pal.store import migrate
from pal.store import rooms as rooms_store
from pal.store.db import Database, open_database
from pal.store.tables import deliveries, messages, rooms, utcnow


@pytest.fixture
def room(database: Database) -> dict[str, Any]:
    """The ``general`` room with agent ``codex`` in mode ``all``."""

    def setup(conn: sa.Connection) -> dict[str, Any]:
        room = rooms_store.ensure_room(conn, "general")
        agents_store.upsert_agent(conn, "codex")
        rooms_store.set_membership(conn, room["id"], "codex", "agent", "all")
        return room

    return database.write_sync(setup)


def count(database: Database, table: sa.Table) -> int:
    return database.read_sync(
        lambda conn: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    )


def contents(database: Database) -> list[str]:
    return database.read_sync(
        lambda conn: list(
            conn.execute(sa.select(messages.c.content).order_by(messages.c.id)).scalars()
        )
    )


def new(content: str, **fields: Any) -> NewMessage:
    return NewMessage(
        room="general", sender=fields.pop("sender", "alice"), content=content, **fields
    )


async def in_order(database: Database, *jobs: Callable[..., Any]) -> list[Any]:
    """Submit ``jobs`` in this order while a first job holds the writer, so on SQLite they
    queue up and run in one group commit; returns each job's result or exception."""
    gate = threading.Event()

    def hold(conn: sa.Connection) -> None:
        assert gate.wait(30), "gate never opened"

    async def release() -> None:
        gate.set()  # runs after every task above has submitted its job

    tasks = [asyncio.create_task(database.write(hold))]
    tasks += [asyncio.create_task(database.write(job)) for job in jobs]
    tasks.append(asyncio.create_task(release()))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return results[1:-1]


async def test_store_200_concurrent_posts_all_land_without_lock_errors(database, room):
    results = await asyncio.gather(
        *(database.write(post_message, new(f"message {i}")) for i in range(200)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    ids = [r["message"]["id"] for r in results]
    assert len(set(ids)) == 200
    assert count(database, messages) == 200
    assert count(database, deliveries) == 200  # codex (mode all) got each one
    assert sorted(contents(database)) == sorted(f"message {i}" for i in range(200))


async def test_store_ids_follow_commit_order(database, room):
    results = await asyncio.gather(*(database.write(post_message, new(f"m{i}")) for i in range(50)))
    listed = database.read_sync(lambda conn: messages_store.list_messages(conn, limit=100))
    assert [m["id"] for m in listed] == sorted(r["message"]["id"] for r in results)


async def test_store_two_handles_on_one_sqlite_file_never_see_database_is_locked(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    migrate.upgrade(url)
    first, second = open_database(url), open_database(url)
    try:
        first.write_sync(rooms_store.ensure_room, "general")
        results = await asyncio.gather(
            *(
                db.write(post_message, new(f"{n}-{i}"))
                for i in range(60)
                for n, db in (("a", first), ("b", second))
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        assert count(first, messages) == 120
    finally:
        first.close()
        second.close()


async def test_store_failing_write_leaves_nothing_and_neighbours_commit(database, room):
    def doomed(conn: sa.Connection) -> None:
        post_message(conn, new("doomed @codex"))
        raise RuntimeError("boom after inserting")

    before, failed, after = await in_order(
        database,
        lambda conn: post_message(conn, new("before")),
        doomed,
        lambda conn: post_message(conn, new("after")),
    )
    assert isinstance(failed, RuntimeError)
    assert before["message"]["content"] == "before"
    assert after["message"]["content"] == "after"
    assert sorted(contents(database)) == ["after", "before"]  # PostgreSQL runs them in parallel
    assert count(database, deliveries) == 2
    listed = database.read_sync(lambda conn: deliveries_store.list_deliveries(conn))
    assert {d["message_id"] for d in listed} == {before["message"]["id"], after["message"]["id"]}


async def test_store_database_error_in_one_job_spares_its_neighbours(database, room):
    def clash(conn: sa.Connection) -> None:
        post_message(conn, new("doomed"))
        conn.execute(  # a second room named "general": a unique violation in the database
            rooms.insert().values(
                id="room_dup", name="general", settings={}, agent_hops=0, created_at=utcnow()
            )
        )

    results = await in_order(
        database,
        lambda conn: post_message(conn, new("one")),
        clash,
        lambda conn: post_message(conn, new("two")),
        lambda conn: post_message(conn, new("three")),
    )
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert [r["message"]["content"] for i, r in enumerate(results) if i != 1] == [
        "one",
        "two",
        "three",
    ]
    assert sorted(contents(database)) == ["one", "three", "two"]
    assert count(database, deliveries) == 3


async def test_store_every_job_of_a_group_can_fail_alone(database, room):
    def fail(conn: sa.Connection) -> None:
        post_message(conn, new("doomed"))
        raise ValueError("nope")

    results = await in_order(database, fail, fail, fail)
    assert all(isinstance(r, ValueError) for r in results)
    assert contents(database) == []
    assert database.write_sync(post_message, new("still works"))["message"]["id"] >= 1


async def test_store_message_and_deliveries_commit_together(database, room, monkeypatch):
    def broken_insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise RuntimeError("delivery insert failed")

    monkeypatch.setattr(routing.deliveries_store, "insert_deliveries", broken_insert)
    with pytest.raises(RuntimeError, match="delivery insert failed"):
        await database.write(post_message, new("@codex important"))
    assert count(database, messages) == 0
    assert count(database, deliveries) == 0
    hops = database.read_sync(lambda conn: rooms_store.get_room(conn, "general")["agent_hops"])
    assert hops == 0


async def test_store_loop_counter_rolls_back_with_a_failed_agent_post(database, room, monkeypatch):
    database.write_sync(post_message, new("from the agent", sender="codex"))
    monkeypatch.setattr(
        routing.deliveries_store,
        "insert_deliveries",
        lambda conn, rows: (_ for _ in ()).throw(RuntimeError("fail")),
    )
    with pytest.raises(RuntimeError):
        await database.write(post_message, new("again", sender="codex"))
    hops = database.read_sync(lambda conn: rooms_store.get_room(conn, "general")["agent_hops"])
    assert hops == 1


async def test_store_concurrent_retries_with_one_client_msg_id_post_once(database, room):
    results = await asyncio.gather(
        *(database.write(post_message, new("retry me", client_msg_id="cm-1")) for _ in range(20)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert len({r["message"]["id"] for r in results}) == 1
    assert sum(not r["duplicate"] for r in results) == 1
    assert count(database, messages) == 1
    assert count(database, deliveries) == 1


async def test_store_concurrent_room_creates_with_one_name_make_one_room(database):
    results = await asyncio.gather(
        *(database.write(rooms_store.create_room, "ops") for _ in range(10)),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, dict)]
    assert len(created) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))


async def test_store_concurrent_agent_upserts_with_one_key_all_succeed(database):
    results = await asyncio.gather(
        *(database.write(agents_store.upsert_agent, "codex") for _ in range(10)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert sum(created for _, created in results) == 1


async def test_store_concurrent_invites_of_one_agent_all_succeed(database, room):
    results = await asyncio.gather(
        *(
            database.write(rooms_store.set_membership, room["id"], f"a{i % 2}", "agent", "all")
            for i in range(10)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert sum(created for _, created in results) == 2
