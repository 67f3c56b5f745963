"""Periodic digests: one ``digest`` delivery per period for a ``periodic`` member, covering
what is new, and nothing when nothing is; the room's ``digest_period`` setting.

Sweeps are driven directly (``pal.server.digests.sweep_once``) with a chosen ``now``, so no
test waits for a period to pass.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pal.config import load_settings
from pal.server import digests
from pal.server.app import create_app
from pal.store import digests as digests_store
from pal.store.db import Database, open_database
from pal.store.tables import memberships, utcnow
from tests.conftest import wait_until
from tests.helpers import invite, make_agent, make_room, post

HOUR = timedelta(seconds=digests_store.DEFAULT_PERIOD)


def sweep(client: Any, at: datetime) -> list[dict[str, Any]]:
    """One digest sweep at ``at``, in the app's event loop; the deliveries it made."""
    made, _ = client.portal.call(digests.sweep_once, client.app.state.db, client.app.state.hub, at)
    return made


def membership(database: Database, agent: str, room_id: str) -> dict[str, Any]:
    def read(conn: sa.Connection) -> dict[str, Any]:
        row = conn.execute(
            sa.select(memberships).where(
                memberships.c.member == agent, memberships.c.room_id == room_id
            )
        ).one()
        return dict(row._mapping)

    return database.read_sync(read)


def periodic(client: Any, agent: str = "codex", room: str = "general") -> dict[str, Any]:
    make_agent(client, agent)
    return invite(client, room, agent, "periodic")


def delivery(client: Any, delivery_id: int) -> dict[str, Any]:
    r = client.get(f"/api/deliveries/{delivery_id}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()["delivery"]
    return found


def test_a_burst_of_messages_makes_one_digest_per_period(client):
    before = post(client, "history the digest never covers")["message"]
    start = utcnow()
    joined = periodic(client)
    assert joined["cursor"] == before["id"]  # no digest of the room's history
    make_agent(client, "claude")
    invite(client, "general", "claude", "mentions")
    burst = [post(client, f"update {i}") for i in range(5)]
    assert all(b["deliveries"] == [] for b in burst)  # nothing per message
    assert sweep(client, start + HOUR / 2) == []  # the period has not passed
    with client.app.state.hub.subscribe(frozenset({"delivery"})) as queue:
        [digest] = sweep(client, start + HOUR + timedelta(seconds=1))
        event = queue.get_nowait()
    assert digest["agent_key"] == "codex" and digest["reason"] == "digest"
    assert digest["status"] == "pending" and digest["topic_id"] is None
    assert digest["digest_after"] == before["id"]
    assert digest["message_id"] == burst[-1]["message"]["id"]
    assert event["agent_key"] == "codex" and event["delivery_id"] == digest["id"]
    shown = delivery(client, digest["id"])
    assert (shown["reason"], shown["digest_after"]) == ("digest", before["id"])
    # the same sweep again, and later sweeps with nothing new: nothing
    assert sweep(client, start + HOUR + timedelta(seconds=1)) == []
    assert sweep(client, start + 3 * HOUR) == []
    later = [post(client, f"later {i}") for i in range(2)]
    [second] = sweep(client, start + 4 * HOUR)
    assert second["digest_after"] == burst[-1]["message"]["id"]
    assert second["message_id"] == later[-1]["message"]["id"]
    codex = [d for d in client.get("/api/deliveries?agent=codex").json()["deliveries"]]
    assert [d["reason"] for d in codex] == ["digest", "digest"]
    assert client.get("/api/deliveries?agent=claude").json()["deliveries"] == []


def test_the_period_counts_from_the_last_digest_and_the_room_setting(client):
    make_room(client, "ops", settings={"digest_period": 60})
    start = utcnow()
    periodic(client, room="ops")
    post(client, "one", room="ops")
    assert sweep(client, start + timedelta(seconds=59)) == []
    [first] = sweep(client, start + timedelta(seconds=61))
    post(client, "two", room="ops")
    assert sweep(client, start + timedelta(seconds=61 + 59)) == []
    [second] = sweep(client, start + timedelta(seconds=61 + 60))
    assert second["digest_after"] == first["message_id"]


def test_own_messages_and_system_notices_make_no_digest(client):
    start = utcnow()
    periodic(client)
    own = post(client, "my own report", sender="codex")["message"]
    post(client, "run 3 cannot start", sender="codex", sender_kind="system")
    assert sweep(client, start + 2 * HOUR) == []
    news = post(client, "something new")["message"]
    [digest] = sweep(client, start + 2 * HOUR)
    # it covers the whole range (the daemon leaves the agent's own messages out)
    assert digest["digest_after"] < own["id"] and digest["message_id"] == news["id"]


def test_a_mention_reaches_the_member_at_once_and_only_adds_context_to_its_digest(client):
    start = utcnow()
    joined = periodic(client)
    mention = post(client, "@codex look now")
    assert [(d["agent_key"], d["reason"]) for d in mention["deliveries"]] == [("codex", "mention")]
    assert sweep(client, start + 2 * HOUR) == []  # it was delivered: nothing new for a digest
    plain = post(client, "fyi, the deploy is done")["message"]
    post(client, "@codex and this too")
    [digest] = sweep(client, start + 2 * HOUR)
    # it ends at the newest message not delivered yet (one delivery per agent and message)
    assert digest["digest_after"] == joined["cursor"]
    assert digest["digest_after"] < mention["message"]["id"] < digest["message_id"]
    assert digest["message_id"] == plain["id"]
    assert sweep(client, start + 4 * HOUR) == []  # only a delivered mention is after it


def test_becoming_periodic_starts_from_the_newest_message(client, database):
    make_agent(client, "codex")
    room = client.get("/api/rooms/general").json()["room"]
    invite(client, "general", "codex", "mentions")
    old = [post(client, f"old {i}")["message"] for i in range(3)]
    switched_at = utcnow()
    changed = invite(client, "general", "codex", "periodic")
    assert changed["cursor"] == old[-1]["id"] and changed["mode"] == "periodic"
    row = membership(database, "codex", room["id"])
    assert row["cursor"] == old[-1]["id"]
    assert row["last_digest_at"] >= switched_at  # its first period starts now
    assert sweep(client, switched_at + 2 * HOUR) == []  # nothing new since the switch
    new = post(client, "new")["message"]
    [digest] = sweep(client, switched_at + 2 * HOUR)
    # inviting it as periodic again changes nothing; leaving periodic and coming back restarts
    invite(client, "general", "codex", "periodic")
    assert membership(database, "codex", room["id"])["cursor"] == new["id"] == digest["message_id"]
    post(client, "while in mentions mode")
    invite(client, "general", "codex", "mentions")
    last = post(client, "latest")["message"]
    invite(client, "general", "codex", "periodic")
    assert membership(database, "codex", room["id"])["cursor"] == last["id"]


def test_a_new_periodic_member_starts_from_the_newest_message(client):
    make_room(client, "fresh")
    assert periodic(client, room="fresh")["cursor"] == 0
    last = post(client, "hello", room="fresh")["message"]
    make_agent(client, "claude")
    assert invite(client, "fresh", "claude", "periodic")["cursor"] == last["id"]


def test_two_sweeps_that_read_the_same_cursor_make_one_digest(client, database):
    start = utcnow()
    periodic(client)
    post(client, "one")
    at = start + 2 * HOUR
    due = database.read_sync(digests_store.find_due, at)
    assert [m["member"] for m in due.members] == ["codex"]
    [made] = database.write_sync(digests_store.make_digests, due.members, at)
    # a second server read the same cursor before the first one wrote, and a message came
    # in since: it makes nothing (no second digest over the same messages)
    news = post(client, "two")["message"]
    assert database.write_sync(digests_store.make_digests, due.members, at) == []
    [following] = sweep(client, at + 2 * HOUR)
    assert following["digest_after"] == made["message_id"]
    assert following["message_id"] == news["id"]


def test_concurrent_sweeps_of_two_servers_make_one_digest_each_time(client, database):
    start = utcnow()
    for agent in ("codex", "claude", "gemini"):
        periodic(client, agent)
    other = open_database(database.url)  # a second server's connection to the same database
    hubs = (client.app.state.hub, client.app.state.hub)

    async def race(at: datetime) -> list[dict[str, Any]]:
        both = await asyncio.gather(
            digests.sweep_once(database, hubs[0], at), digests.sweep_once(other, hubs[1], at)
        )
        return [d for made, _ in both for d in made]

    try:
        for round_ in range(1, 6):
            post(client, f"news {round_}")
            made = client.portal.call(race, start + round_ * 2 * HOUR)
            assert sorted(d["agent_key"] for d in made) == ["claude", "codex", "gemini"]
    finally:
        other.close()
    digests_made = client.get("/api/deliveries", params={"limit": 100}).json()["deliveries"]
    assert len([d for d in digests_made if d["reason"] == "digest"]) == 15


def test_the_sweep_task_runs_in_the_server(database, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setattr(digests, "SWEEP_INTERVAL", 0.05)
    settings = load_settings({"PAL_HOME": str(tmp_path / "home")}, db_url=database.url)
    with TestClient(create_app(settings, database=database)) as client:
        periodic(client)
        room = client.get("/api/rooms/general").json()["room"]

        def backdate(conn: sa.Connection) -> None:
            conn.execute(
                memberships.update()
                .where(memberships.c.room_id == room["id"])
                .values(last_digest_at=utcnow() - 2 * HOUR)
            )

        database.write_sync(backdate)
        news = post(client, "news")["message"]

        def digest() -> list[dict[str, Any]]:
            found = client.get("/api/deliveries", params={"agent": "codex"}).json()
            return [d for d in found["deliveries"] if d["reason"] == "digest"]

        [made] = wait_until(digest, timeout=10)
        assert made["message_id"] == news["id"]


def test_next_sweep_follows_the_shortest_period():
    assert digests.next_sweep(None) == digests.SWEEP_INTERVAL
    assert digests.next_sweep(3600) == digests.SWEEP_INTERVAL
    assert digests.next_sweep(6) == 3.0


# -- the room setting ------------------------------------------------------------------------


def test_room_settings_change_with_patch_and_keep_other_keys(client):
    make_room(client, "ops", settings={"hop_limit": 3, "note": "x"})
    r = client.patch("/api/rooms/ops", json={"settings": {"digest_period": 600}})
    assert r.status_code == 200, r.text
    assert r.json()["room"]["settings"] == {"hop_limit": 3, "note": "x", "digest_period": 600}
    r = client.patch("/api/rooms/ops", json={"settings": {"hop_limit": None}})
    assert r.json()["room"]["settings"] == {"note": "x", "digest_period": 600}
    shown = client.get("/api/rooms/ops").json()["room"]
    assert shown["settings"] == {"note": "x", "digest_period": 600}
    listed = {room["name"]: room for room in client.get("/api/rooms").json()["rooms"]}
    assert listed["ops"]["settings"]["digest_period"] == 600


@pytest.mark.parametrize("period", [0, 4, 604_801, "600", True, 60.5, -10])
def test_room_settings_refuse_a_bad_digest_period(client, period):
    for r in (
        client.patch("/api/rooms/general", json={"settings": {"digest_period": period}}),
        client.post("/api/rooms", json={"name": "ops", "settings": {"digest_period": period}}),
    ):
        assert r.status_code == 422, r.text
        assert (
            "digest_period must be a whole number of seconds from 5 to 604800"
            in (r.json()["error"])
        )
    assert client.get("/api/rooms/general").json()["room"]["settings"] == {}


def test_room_settings_refuse_unknown_keys_and_name_the_known_ones(client):
    r = client.patch("/api/rooms/general", json={"settings": {"digest_perod": 60}})
    assert r.status_code == 422
    assert r.json()["error"] == (
        "unknown room setting(s) digest_perod; the settings are hop_limit, digest_period"
    )
    r = client.patch("/api/rooms/general", json={"digest_period": 60})
    assert r.status_code == 422 and "settings" in r.json()["error"]
    r = client.patch("/api/rooms/nowhere", json={"settings": {"digest_period": 60}})
    assert r.status_code == 404 and r.json()["error"] == "room 'nowhere' not found"


def test_a_stored_period_the_api_would_refuse_counts_as_the_default():
    assert digests_store.digest_period({}) == digests_store.DEFAULT_PERIOD == 3600
    assert digests_store.digest_period({"digest_period": 60}) == 60
    for bad in ("60", 1, True, None, 1.5):
        assert digests_store.digest_period({"digest_period": bad}) == 3600
