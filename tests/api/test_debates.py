"""Debates: starting one (its topic and the delivery to ``a``), turns counted as the replies
are posted (a→b→a, reason ``debate``), completion, stop, listing, events, and a debate that
carries on in a new server instance over the same database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.server.app import create_app
from pal.store.db import open_database
from pal.store.tables import deliveries
from tests.api.computers_helpers import hub_events, make_box
from tests.helpers import invite, make_agent, make_room, post, routed


@pytest.fixture
def debaters(client: TestClient) -> TestClient:
    make_agent(client, "codex")
    make_agent(client, "reviewer")
    return client


def start(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"room": "general", "a": "codex", "b": "reviewer", "topic": "tabs or spaces?"}
    merged = {k: v for k, v in {**body, **fields}.items() if v is not None}
    r = client.post("/api/debates", json=merged)
    assert r.status_code == 201, r.text
    started: dict[str, Any] = r.json()
    return started


def debate(client: TestClient, debate_id: int) -> dict[str, Any]:
    r = client.get(f"/api/debates/{debate_id}")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()["debate"]
    return found


def reply(client: TestClient, sender: str, parent: int, text: str = "my turn", **fields: Any):
    return post(client, text, sender=sender, parent=parent, **fields)


def deliveries_of(database, message_id: int) -> list[tuple[str, str, str]]:
    def read(conn: sa.Connection) -> list[tuple[str, str, str]]:
        rows = conn.execute(
            sa.select(deliveries.c.agent_key, deliveries.c.reason, deliveries.c.status)
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.agent_key)
        )
        return [tuple(r) for r in rows]

    return database.read_sync(read)


# -- starting -----------------------------------------------------------------------------------


def test_start_posts_the_topic_and_delivers_it_to_a_alone(debaters, database):
    started = start(debaters, turns=4, chat="general", room=None)
    d, message = started["debate"], started["message"]
    assert (d["a"], d["b"], d["turns"], d["turn"]) == ("codex", "reviewer", 4, 0)
    assert (d["status"], d["next_speaker"], d["created_by"]) == ("running", "codex", "operator")
    assert d["room"] == "general" and d["root_message_id"] == message["id"]
    assert d["topic"] == "tabs or spaces?" and d["ended_at"] is None
    assert message["sender"] == "operator" and message["sender_kind"] == "human"
    assert message["content"].startswith("Debate (4 turns) between @codex and reviewer: tabs")
    assert message["mentions"] == ["codex"] and message["source"] == "debate"
    assert [(x["agent_key"], x["reason"]) for x in started["deliveries"]] == [("codex", "debate")]
    assert deliveries_of(database, message["id"]) == [("codex", "debate", "pending")]
    assert debate(debaters, d["id"]) == d


def test_start_defaults_to_six_turns_and_takes_a_room_id(debaters):
    room = make_room(debaters, "design")
    d = start(debaters, room=room["id"])["debate"]
    assert d["turns"] == 6 and d["room"] == "design"


@pytest.mark.parametrize("mode", ["muted", "off", "periodic"])
def test_a_gets_the_topic_whatever_its_mode_and_b_does_not(debaters, database, mode):
    invite(debaters, "general", "codex", mode)
    invite(debaters, "general", "reviewer", "all")
    message = start(debaters)["message"]
    assert deliveries_of(database, message["id"]) == [("codex", "debate", "pending")]


def test_start_by_an_agent_posts_the_topic_as_that_agent(debaters, database):
    make_agent(debaters, "lead")
    started = start(debaters, created_by="lead")
    assert started["message"]["sender"] == "lead"
    assert started["message"]["sender_kind"] == "agent"
    assert started["debate"]["created_by"] == "lead"
    assert deliveries_of(database, started["message"]["id"]) == [("codex", "debate", "pending")]


@pytest.mark.parametrize(
    "fields, status, hint",
    [
        ({"b": "codex"}, 422, "two different agents"),
        ({"a": "ghost"}, 404, "a: agent 'ghost' not found"),
        ({"b": "ghost"}, 404, "b: agent 'ghost' not found"),
        ({"room": "nowhere"}, 404, "room 'nowhere' not found"),
        ({"turns": 0}, 422, "turns"),
        ({"turns": 51}, 422, "turns"),
        ({"turns": "6"}, 422, "turns"),
        ({"topic": ""}, 422, "topic"),
        ({"topic": "  \n"}, 422, "topic"),
        ({"topic": "x" * 4001}, 422, "topic"),
        ({"a": "bad key!"}, 422, "a"),
        ({"created_by": ""}, 422, "created_by"),
        ({"rounds": 3}, 422, "rounds: unknown field"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_start_refuses_bad_input_and_writes_nothing(debaters, fields, status, hint):
    body = {"room": "general", "a": "codex", "b": "reviewer", "topic": "t", **fields}
    r = debaters.post("/api/debates", json=body)
    assert r.status_code == status, r.text
    assert hint in r.json()["error"]
    assert debaters.get("/api/debates").json()["debates"] == []
    assert debaters.get("/api/messages").json()["messages"] == []


def test_start_without_room_says_it_is_required(debaters):
    r = debaters.post("/api/debates", json={"a": "codex", "b": "reviewer", "topic": "t"})
    assert r.status_code == 422 and "room: is required" in r.json()["error"]


# -- turns ----------------------------------------------------------------------------------------


def test_turns_alternate_and_each_goes_to_the_other_agent(debaters, database):
    started = start(debaters, turns=4)
    d_id, root = started["debate"]["id"], started["message"]["id"]

    first = reply(debaters, "codex", root, "tabs")
    assert routed(first) == {"reviewer": "debate"}
    assert first["debate"]["turn"] == 1 and first["debate"]["next_speaker"] == "reviewer"
    second = reply(debaters, "reviewer", root, "spaces")
    assert routed(second) == {"codex": "debate"}
    third = reply(debaters, "codex", root, "tabs, still")
    assert routed(third) == {"reviewer": "debate"}
    d = debate(debaters, d_id)
    assert (d["turn"], d["next_speaker"], d["status"]) == (3, "reviewer", "running")
    assert deliveries_of(database, third["message"]["id"]) == [("reviewer", "debate", "pending")]


def test_replies_that_are_not_the_awaited_turn_do_not_count(debaters):
    make_agent(debaters, "third")
    started = start(debaters)
    d_id, root = started["debate"]["id"], started["message"]["id"]
    other_thread = post(debaters, "unrelated")["message"]["id"]

    assert reply(debaters, "reviewer", root)["debate"] is None  # b, before a has spoken
    assert reply(debaters, "third", root)["debate"] is None  # not a debater
    assert reply(debaters, "alice", root)["debate"] is None  # a person
    assert post(debaters, "top level", sender="codex")["debate"] is None  # not in the thread
    assert reply(debaters, "codex", other_thread)["debate"] is None  # another thread
    assert debate(debaters, d_id)["turn"] == 0

    assert reply(debaters, "codex", root)["debate"]["turn"] == 1
    assert reply(debaters, "codex", root)["debate"] is None  # a again: b's turn now
    assert debate(debaters, d_id)["next_speaker"] == "reviewer"


def test_a_reply_nested_deeper_in_the_thread_counts(debaters):
    started = start(debaters)
    root = started["message"]["id"]
    opening = reply(debaters, "codex", root)["message"]["id"]
    answer = reply(debaters, "reviewer", opening)  # a reply to the reply
    assert answer["debate"]["turn"] == 2 and routed(answer) == {"codex": "debate"}


def test_a_debate_completes_after_its_turns_with_a_notice_and_no_more_deliveries(
    debaters, database
):
    invite(debaters, "general", "codex", "mentions")  # members: the thread rule would wake
    invite(debaters, "general", "reviewer", "mentions")
    started = start(debaters, turns=3)
    d_id, root = started["debate"]["id"], started["message"]["id"]
    reply(debaters, "codex", root)
    reply(debaters, "reviewer", root)
    last = reply(debaters, "codex", root, "final word")

    assert last["deliveries"] == []  # reviewer is not woken by the thread rule either
    assert last["debate"]["status"] == "completed" and last["debate"]["turn"] == 3
    notice = last["debate"]["notice"]
    assert notice["content"] == "Debate finished after 3 turns."
    assert notice["sender_kind"] == "system" and notice["parent_id"] == root
    assert deliveries_of(database, notice["id"]) == []
    d = debate(debaters, d_id)
    assert (d["status"], d["turn"], d["next_speaker"]) == ("completed", 3, None)
    assert d["ended_at"] is not None

    after = reply(debaters, "reviewer", root, "one more thing")
    assert after["debate"] is None and debate(debaters, d_id)["turn"] == 3
    thread = debaters.get("/api/messages", params={"parent": root}).json()["messages"]
    assert [m["sender"] for m in thread] == ["codex", "reviewer", "codex", "pal", "reviewer"]


def test_a_one_turn_debate_ends_with_a_s_reply(debaters):
    started = start(debaters, turns=1)
    last = reply(debaters, "codex", started["message"]["id"])
    assert last["debate"]["status"] == "completed" and last["deliveries"] == []


def test_a_reply_that_also_mentions_the_other_agent_is_delivered_once(debaters, database):
    invite(debaters, "general", "reviewer", "all")
    started = start(debaters)
    turn = reply(debaters, "codex", started["message"]["id"], "over to you @reviewer")
    assert routed(turn) == {"reviewer": "debate"}
    assert deliveries_of(database, turn["message"]["id"]) == [("reviewer", "debate", "pending")]


def test_a_muted_or_off_agent_still_gets_its_turns(debaters, database):
    invite(debaters, "general", "codex", "muted")
    invite(debaters, "general", "reviewer", "off")
    started = start(debaters)
    root = started["message"]["id"]
    assert routed(reply(debaters, "codex", root)) == {"reviewer": "debate"}
    assert routed(reply(debaters, "reviewer", root)) == {"codex": "debate"}


def test_turns_pass_the_loop_guard_and_do_not_count_against_it(debaters):
    make_room(debaters, "tight", settings={"hop_limit": 1})
    make_agent(debaters, "watcher")
    invite(debaters, "tight", "watcher", "all")
    started = start(debaters, room="tight", turns=4)
    root = started["message"]["id"]
    for sender, other in [("codex", "reviewer"), ("reviewer", "codex"), ("codex", "reviewer")]:
        turn = reply(debaters, sender, root, room="tight")
        assert turn["suppressed"] is None
        assert routed(turn) == {other: "debate", "watcher": "all"}
    room = debaters.get("/api/rooms/tight").json()["room"]
    assert room["agent_hops"] == 0


def test_other_agents_in_the_room_are_routed_as_usual(debaters):
    make_agent(debaters, "watcher")
    invite(debaters, "general", "watcher", "all")
    started = start(debaters)
    assert routed(started) == {"codex": "debate", "watcher": "all"}
    assert routed(reply(debaters, "codex", started["message"]["id"])) == {
        "reviewer": "debate",
        "watcher": "all",
    }


def test_a_debate_started_after_agents_posted_in_the_room_still_counts(debaters):
    # an agent's reply in a thread reads the room's running debates (cached on SQLite):
    # starting a debate afterwards must be seen by the next reply
    root = post(debaters, "question")["message"]["id"]
    assert reply(debaters, "codex", root)["debate"] is None
    started = start(debaters)
    assert reply(debaters, "codex", started["message"]["id"])["debate"]["turn"] == 1


def test_two_debates_in_one_room_keep_their_own_turns(debaters):
    one = start(debaters, topic="first")
    two = start(debaters, topic="second", a="reviewer", b="codex")
    assert reply(debaters, "codex", one["message"]["id"])["debate"]["id"] == one["debate"]["id"]
    assert (
        reply(debaters, "reviewer", two["message"]["id"])["debate"]["id"] == (two["debate"]["id"])
    )
    assert debate(debaters, one["debate"]["id"])["next_speaker"] == "reviewer"
    assert debate(debaters, two["debate"]["id"])["next_speaker"] == "codex"


# -- stop -----------------------------------------------------------------------------------------


def test_stop_ends_the_debate_fails_its_unclaimed_turn_and_says_so(debaters, database):
    started = start(debaters, turns=6)
    d_id, root = started["debate"]["id"], started["message"]["id"]
    turn = reply(debaters, "codex", root)
    r = debaters.post(f"/api/debates/{d_id}/stop", json={"stopped_by": "alice"})
    assert r.status_code == 200, r.text
    d = r.json()["debate"]
    assert (d["status"], d["next_speaker"], d["turn"]) == ("stopped", None, 1)
    assert d["ended_at"] is not None
    # reviewer's turn was never claimed: it will not wake for a debate that is over
    [(agent, reason, status)] = deliveries_of(database, turn["message"]["id"])
    assert (agent, reason, status) == ("reviewer", "debate", "failed")
    thread = debaters.get("/api/messages", params={"parent": root}).json()["messages"]
    assert thread[-1]["content"] == "Debate stopped by alice after 1 of 6 turns."
    assert thread[-1]["sender_kind"] == "system"
    # the reply that would have been the next turn counts for nothing
    late = reply(debaters, "reviewer", root)
    assert late["debate"] is None and debate(debaters, d_id)["turn"] == 1


def test_stop_is_idempotent_and_leaves_an_ended_debate_as_it_is(debaters):
    started = start(debaters, turns=1)
    d_id, root = started["debate"]["id"], started["message"]["id"]
    first = debaters.post(f"/api/debates/{d_id}/stop").json()["debate"]
    again = debaters.post(f"/api/debates/{d_id}/stop")
    assert again.status_code == 200 and again.json()["debate"] == first
    thread = debaters.get("/api/messages", params={"parent": root}).json()["messages"]
    assert [m["content"] for m in thread] == ["Debate stopped after 0 of 1 turns."]

    done = start(debaters, turns=1)
    reply(debaters, "codex", done["message"]["id"])
    stopped = debaters.post(f"/api/debates/{done['debate']['id']}/stop").json()["debate"]
    assert stopped["status"] == "completed"


def test_stop_and_show_an_unknown_debate_is_404(debaters):
    for r in (debaters.post("/api/debates/99/stop"), debaters.get("/api/debates/99")):
        assert r.status_code == 404 and r.json()["error"] == "debate 99 not found"
    assert debaters.get("/api/debates/abc").status_code == 422


# -- list and events ----------------------------------------------------------------------------


def test_list_is_newest_first_and_filters_by_room_and_status(debaters):
    make_room(debaters, "design")
    first = start(debaters)["debate"]["id"]
    second = start(debaters, room="design")["debate"]["id"]
    third = start(debaters)["debate"]["id"]
    debaters.post(f"/api/debates/{third}/stop")

    def listed(**params: Any) -> list[int]:
        r = debaters.get("/api/debates", params=params)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["debates"]]

    assert listed() == [third, second, first]
    assert listed(room="general") == [third, first]
    assert listed(chat="design") == [second]
    assert listed(status="running") == [second, first]
    assert listed(status="stopped", room="general") == [third]
    assert listed(limit=1) == [third]
    assert debaters.get("/api/debates", params={"room": "nowhere"}).status_code == 404
    bad = debaters.get("/api/debates", params={"status": "paused"})
    assert bad.status_code == 422 and "status" in bad.json()["error"]


def test_a_debate_publishes_events_as_it_goes(debaters):
    with hub_events(debaters) as events:
        started = start(debaters, turns=2)
        d_id, root = started["debate"]["id"], started["message"]["id"]
        kinds = [(e["kind"], e.get("action")) for e in events()]
        assert kinds == [("message", None), ("delivery", None), ("debate", "started")]

        reply(debaters, "codex", root)
        got = events()
        assert [e for e in got if e["kind"] == "debate"] == [
            {
                "id": got[-1]["id"],
                "kind": "debate",
                "debate_id": d_id,
                "room_id": started["debate"]["room_id"],
                "action": "turn",
                "status": "running",
                "turn": 1,
            }
        ]
        assert [e["agent_key"] for e in got if e["kind"] == "delivery"] == ["reviewer"]

        last = reply(debaters, "reviewer", root)
        got = events()
        notice_id = last["debate"]["notice"]["id"]
        assert [e.get("message_id") for e in got if e["kind"] == "message"] == [
            last["message"]["id"],
            notice_id,
        ]
        assert [(e["action"], e["status"]) for e in got if e["kind"] == "debate"] == [
            ("completed", "completed")
        ]

        other = start(debaters)["debate"]["id"]
        events()
        debaters.post(f"/api/debates/{other}/stop")
        assert [(e["kind"], e.get("action")) for e in events()] == [
            ("message", None),
            ("debate", "stopped"),
        ]
        debaters.post(f"/api/debates/{other}/stop")
        assert events() == []  # nothing changed


# -- restart safety and access ----------------------------------------------------------------


def test_a_new_server_on_the_same_database_carries_on(db_url: str, tmp_path: Path):
    settings = load_settings({"PAL_HOME": str(tmp_path / "home")}, db_url=db_url)

    first_db = open_database(db_url)
    with TestClient(create_app(settings, database=first_db)) as first:
        make_agent(first, "codex")
        make_agent(first, "reviewer")
        started = start(first, turns=3)
        d_id, root = started["debate"]["id"], started["message"]["id"]
        reply(first, "codex", root)
    first_db.close()

    second_db = open_database(db_url)
    try:
        with TestClient(create_app(settings, database=second_db)) as second:
            assert debate(second, d_id)["next_speaker"] == "reviewer"
            assert routed(reply(second, "reviewer", root)) == {"codex": "debate"}
            last = reply(second, "codex", root)
            assert last["debate"]["status"] == "completed"
    finally:
        second_db.close()


def test_a_computer_key_can_start_and_stop_a_debate(database, tmp_path):
    token = "pal_admin_test-token-0123456789"
    admin = {"Authorization": f"Bearer {token}"}
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home"), "PAL_AUTH": "token"}, db_url=database.url
    )
    with TestClient(create_app(settings, database=database, admin_token=token)) as guarded:
        for key in ("codex", "reviewer"):
            assert guarded.post("/api/agents", json={"key": key}, headers=admin).status_code == 201
        body = {"room": "general", "a": "codex", "b": "reviewer", "topic": "t"}
        assert guarded.post("/api/debates", json=body).status_code == 401
        box = make_box(database)
        r = guarded.post("/api/debates", json=body, headers=box.headers)
        assert r.status_code == 201, r.text
        d_id = r.json()["debate"]["id"]
        assert guarded.get("/api/debates", headers=box.headers).status_code == 200
        r = guarded.post(f"/api/debates/{d_id}/stop", headers=box.headers)
        assert r.status_code == 200 and r.json()["debate"]["status"] == "stopped"
