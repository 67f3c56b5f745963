"""The routing cache on the SQLite writer connection never routes on stale data.

The writer caches rooms, agent memberships and agent keys between message posts
(``store/cache.py``). Each test changes one of those in a way the cache must notice, then
checks that the next post is routed by what the database now says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import rooms as rooms_store
from pal.store.cache import keeps_cache
from pal.store.db import Database, open_database


@pytest.fixture
def sqlite_db(tmp_path: Path, sqlite_template: Path):
    path = tmp_path / "pal.sqlite"
    path.write_bytes(sqlite_template.read_bytes())
    db = open_database(f"sqlite:///{path}")
    db.write_sync(rooms_store.ensure_room, "general")
    yield db
    db.close()


def post(db: Database, content: str, sender: str = "alice") -> dict[str, Any]:
    return db.write_sync(post_message, NewMessage(room="general", sender=sender, content=content))


def routed_to(result: dict[str, Any]) -> set[str]:
    return {d["agent_key"] for d in result["deliveries"]}


def add_agent(db: Database, key: str, mode: str | None = None) -> None:
    def write(conn: sa.Connection) -> None:
        agents_store.upsert_agent(conn, key)
        if mode is not None:
            room = rooms_store.get_room(conn, "general")
            rooms_store.set_membership(conn, room["id"], key, "agent", mode)

    db.write_sync(write)


def test_cache_sees_an_invitation_made_after_posts(sqlite_db):
    add_agent(sqlite_db, "codex")
    assert routed_to(post(sqlite_db, "before")) == set()  # cached: no members
    add_agent(sqlite_db, "codex", mode="all")
    assert routed_to(post(sqlite_db, "after")) == {"codex"}


def test_cache_sees_a_new_agent_key_for_mentions_and_senders(sqlite_db):
    assert routed_to(post(sqlite_db, "@codex hi")) == set()  # not an agent yet
    add_agent(sqlite_db, "codex")
    assert routed_to(post(sqlite_db, "@codex hi")) == {"codex"}
    assert post(sqlite_db, "from codex", sender="codex")["message"]["sender_kind"] == "agent"


def test_cache_sees_a_change_written_by_another_process(sqlite_db):
    add_agent(sqlite_db, "codex", mode="all")
    assert routed_to(post(sqlite_db, "warm the cache")) == {"codex"}
    # A second store on the same file stands for another process (its own writer).
    other = open_database(sqlite_db.url)
    try:
        room_id = other.read_sync(rooms_store.get_room, "general")["id"]
        other.write_sync(rooms_store.set_membership, room_id, "codex", "agent", "off")
    finally:
        other.close()
    assert routed_to(post(sqlite_db, "after the other process muted it")) == set()


def test_cache_drops_what_a_failed_job_changed(sqlite_db):
    add_agent(sqlite_db, "a1", mode="all")
    add_agent(sqlite_db, "a2", mode="all")
    room_id = sqlite_db.read_sync(rooms_store.get_room, "general")["id"]
    sqlite_db.write_sync(
        lambda conn: conn.execute(
            sa.text("UPDATE rooms SET settings = '{\"hop_limit\": 1}' WHERE id = :id"),
            {"id": room_id},
        )
    )
    assert routed_to(post(sqlite_db, "one", sender="a1")) == {"a2"}
    assert post(sqlite_db, "two", sender="a1")["suppressed"]  # loop guard: 2 > hop_limit 1

    @keeps_cache
    def reset_then_fail(conn: sa.Connection) -> None:
        rooms_store.set_agent_hops(conn, room_id, 0)  # rolled back below
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        sqlite_db.write_sync(reset_then_fail)
    # The database still counts 2 agent hops: a human message must reset them, so the agent
    # after it is routed again. A cache that kept the rolled-back 0 would skip the reset.
    post(sqlite_db, "a human writes")
    assert routed_to(post(sqlite_db, "three", sender="a1")) == {"a2"}
