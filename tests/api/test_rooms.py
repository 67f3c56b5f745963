"""Rooms (and the ``chats`` alias), members, mentionables, invitations and topics."""

from __future__ import annotations

import pytest

from tests.helpers import invite, make_agent, make_room, post

DEEP: object = 1
for _ in range(40):
    DEEP = [DEEP]


def test_health_reports_ok_version_and_backend(client, db_url):
    body = client.get("/health").json()
    assert body["ok"] is True
    assert body["version"]
    assert body["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")


def test_index_points_to_health_and_the_api_description(client):
    body = client.get("/").json()
    assert body["name"] == "pal"
    assert body["health"] == "/health"
    assert body["openapi"] == "/openapi.json"
    assert client.get(body["health"]).status_code == 200
    assert client.get(body["openapi"]).status_code == 200


def test_rooms_fresh_install_has_only_general(client):
    rooms = client.get("/api/rooms").json()["rooms"]
    assert [r["name"] for r in rooms] == ["general"]
    assert rooms[0]["id"].startswith("room_")
    assert rooms[0]["last_message_id"] is None
    assert rooms[0]["member_count"] == 0


def test_chats_lists_the_same_rooms_as_rooms(client):
    make_room(client, "ops")
    assert client.get("/api/chats").json() == client.get("/api/rooms").json()


def test_rooms_create_returns_the_room_and_lists_it(client):
    r = client.post("/api/rooms", json={"name": "ops"})
    assert r.status_code == 201
    room = r.json()["room"]
    assert room["name"] == "ops"
    assert room["kind"] == "room"
    assert room["settings"] == {}
    assert room["id"].startswith("room_")
    assert room["created_at"].endswith("Z")
    listed = {x["name"]: x for x in client.get("/api/rooms").json()["rooms"]}
    assert listed["ops"]["id"] == room["id"]


def test_rooms_create_keeps_kind_and_settings(client):
    room = make_room(client, "lark-chat", kind="lark", settings={"hop_limit": 3, "note": "x"})
    assert room["kind"] == "lark"
    assert room["settings"] == {"hop_limit": 3, "note": "x"}
    shown = client.get("/api/rooms/lark-chat").json()["room"]
    assert shown["settings"] == {"hop_limit": 3, "note": "x"}


def test_rooms_create_duplicate_name_is_409_naming_it(client):
    make_room(client, "ops")
    r = client.post("/api/rooms", json={"name": "ops"})
    assert r.status_code == 409
    assert "ops" in r.json()["error"]
    assert [x["name"] for x in client.get("/api/rooms").json()["rooms"]].count("ops") == 1


@pytest.mark.parametrize(
    "name", ["", "has space", "-dash-first", ".dot", "x" * 81, "room_abc", "sl/ash", "ü"]
)
def test_rooms_create_rejects_invalid_names(client, name):
    r = client.post("/api/rooms", json={"name": name})
    assert r.status_code == 422
    assert "name" in r.json()["error"]
    assert len(client.get("/api/rooms").json()["rooms"]) == 1


def test_rooms_create_accepts_name_of_80_chars(client):
    assert make_room(client, "a" * 80)["name"] == "a" * 80


def test_rooms_create_rejects_unknown_kind(client):
    r = client.post("/api/rooms", json={"name": "ops", "kind": "dm"})
    assert r.status_code == 422
    assert "kind" in r.json()["error"]


@pytest.mark.parametrize("hop", [-1, 1.5, "2", True, None])
def test_rooms_create_rejects_bad_hop_limit(client, hop):
    r = client.post("/api/rooms", json={"name": "ops", "settings": {"hop_limit": hop}})
    if hop is None:  # an explicit null means "default"
        assert r.status_code == 201
        return
    assert r.status_code == 422
    assert "hop_limit" in r.json()["error"]


@pytest.mark.parametrize(
    "settings",
    [
        {"big": 2**64},
        {"deep": DEEP},
    ],
    ids=["int-over-64-bits", "nested-too-deep"],
)
def test_rooms_create_rejects_settings_that_cannot_be_stored(client, settings):
    r = client.post("/api/rooms", json={"name": "ops", "settings": settings})
    assert r.status_code == 422
    assert "settings" in r.json()["error"]
    # and the room list still renders
    assert [x["name"] for x in client.get("/api/rooms").json()["rooms"]] == ["general"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e400"])
def test_rooms_create_rejects_non_finite_numbers_in_settings(client, literal):
    body = b'{"name": "ops", "settings": {"x": ' + literal + b"}}"
    r = client.post("/api/rooms", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert [x["name"] for x in client.get("/api/rooms").json()["rooms"]] == ["general"]


def test_rooms_list_counts_members_and_newest_message(client):
    make_agent(client, "codex")
    make_agent(client, "claude")
    invite(client, "general", "codex")
    invite(client, "general", "claude", "all")
    post(client, "one")
    last = post(client, "two")["message"]["id"]
    general = client.get("/api/rooms").json()["rooms"][0]
    assert general["member_count"] == 2
    assert general["last_message_id"] == last


def test_room_get_by_name_and_by_id_show_the_same_room_with_topics(client):
    room = make_room(client, "ops")
    topic = client.post("/api/rooms/ops/topics", json={"title": "Outage"}).json()["topic"]
    by_name = client.get("/api/rooms/ops").json()
    by_id = client.get(f"/api/rooms/{room['id']}").json()
    assert by_name == by_id
    assert by_name["room"]["id"] == room["id"]
    assert [t["id"] for t in by_name["topics"]] == [topic["id"]]


@pytest.mark.parametrize(
    "path", ["", "/members", "/mentionables"], ids=["room", "members", "mentionables"]
)
@pytest.mark.parametrize("ref", ["nope", "room_0000000000000000"])
def test_room_reads_unknown_room_404_naming_it(client, path, ref):
    r = client.get(f"/api/rooms/{ref}{path}")
    assert r.status_code == 404
    assert ref in r.json()["error"]
    assert "room" in r.json()["error"]


def test_room_members_lists_agents_with_mode_name_and_runtime(client):
    make_agent(client, "codex", display_name="Codex Agent")
    make_agent(client, "claude", runtime="claude")
    make_agent(client, "outsider")
    invite(client, "general", "codex", "all")
    invite(client, "general", "claude", "muted")
    body = client.get("/api/rooms/general/members").json()
    assert body["room"] == "general"
    members = {m["member"]: m for m in body["members"]}
    assert set(members) == {"codex", "claude"}
    assert members["codex"]["mode"] == "all"
    assert members["codex"]["display_name"] == "Codex Agent"
    assert members["codex"]["member_kind"] == "agent"
    assert members["claude"]["mode"] == "muted"
    assert members["claude"]["runtime"] == "claude"


def test_room_members_by_id_and_empty_room(client):
    room = make_room(client, "ops")
    body = client.get(f"/api/rooms/{room['id']}/members").json()
    assert body == {"room": "ops", "members": []}


def test_room_mentionables_lists_every_agent_then_recent_people(client):
    make_agent(client, "codex", display_name="Codex Agent")
    make_agent(client, "claude")
    invite(client, "general", "codex", "all")
    post(client, "hi", sender="alice")
    post(client, "hey", sender="bob")
    post(client, "from the agent", sender="codex")
    post(client, "again", sender="alice")
    items = client.get("/api/rooms/general/mentionables").json()["mentionables"]
    agents = [i for i in items if i["kind"] == "agent"]
    people = [i for i in items if i["kind"] == "human"]
    assert items == agents + people  # agents first
    assert {a["key"]: (a["member"], a["mode"]) for a in agents} == {
        "codex": (True, "all"),
        "claude": (False, None),
    }
    assert next(a for a in agents if a["key"] == "codex")["name"] == "Codex Agent"
    assert [p["key"] for p in people] == ["alice", "bob"]  # most recent first, agents excluded


def test_room_mentionables_people_are_per_room(client):
    make_room(client, "ops")
    post(client, "hi", sender="alice")
    post(client, "hi", room="ops", sender="carol")
    items = client.get("/api/rooms/ops/mentionables").json()["mentionables"]
    assert [i["key"] for i in items] == ["carol"]


def test_room_invite_creates_membership_then_changes_mode(client):
    make_agent(client, "codex")
    r = client.post("/api/rooms/general/agents", json={"agent": "codex", "mode": "all"})
    assert r.status_code == 201
    assert r.json()["created"] is True
    membership = r.json()["membership"]
    assert (membership["member"], membership["mode"], membership["room"]) == (
        "codex",
        "all",
        "general",
    )
    r = client.post("/api/rooms/general/agents", json={"agent": "codex", "mode": "muted"})
    assert r.status_code == 200
    assert r.json()["created"] is False
    assert r.json()["membership"]["mode"] == "muted"
    members = client.get("/api/rooms/general/members").json()["members"]
    assert [(m["member"], m["mode"]) for m in members] == [("codex", "muted")]


@pytest.mark.parametrize("mode", ["mentions", "all", "periodic", "muted", "off"])
def test_room_invite_accepts_every_mode(client, mode):
    make_agent(client, "codex")
    assert invite(client, "general", "codex", mode)["mode"] == mode


def test_room_invite_defaults_to_mentions_and_accepts_aliases(client):
    make_agent(client, "codex")
    make_agent(client, "claude")
    r = client.post("/api/rooms/general/agents", json={"agent_key": "codex"})
    assert r.status_code == 201
    assert r.json()["membership"]["mode"] == "mentions"
    r = client.post("/api/rooms/general/agents", json={"key": "claude", "mode": "all"})
    assert r.status_code == 201


def test_room_invite_by_room_id(client):
    room = make_room(client, "ops")
    make_agent(client, "codex")
    r = client.post(f"/api/rooms/{room['id']}/agents", json={"agent": "codex"})
    assert r.status_code == 201
    assert r.json()["membership"]["room"] == "ops"


@pytest.mark.parametrize("mode", ["loud", "", "ALL", None, 1])
def test_room_invite_rejects_invalid_mode_listing_the_valid_ones(client, mode):
    make_agent(client, "codex")
    r = client.post("/api/rooms/general/agents", json={"agent": "codex", "mode": mode})
    assert r.status_code == 422
    error = r.json()["error"]
    assert "mode" in error
    for valid in ("mentions", "all", "periodic", "muted", "off"):
        assert valid in error
    assert client.get("/api/rooms/general/members").json()["members"] == []


def test_room_invite_unknown_agent_is_404_naming_it(client):
    r = client.post("/api/rooms/general/agents", json={"agent": "ghost"})
    assert r.status_code == 404
    assert "agent" in r.json()["error"] and "ghost" in r.json()["error"]


def test_room_invite_unknown_room_is_404_naming_it(client):
    make_agent(client, "codex")
    r = client.post("/api/rooms/nope/agents", json={"agent": "codex"})
    assert r.status_code == 404
    assert "nope" in r.json()["error"]


def test_room_invite_without_agent_is_422(client):
    r = client.post("/api/rooms/general/agents", json={"mode": "all"})
    assert r.status_code == 422
    assert "agent" in r.json()["error"] and "required" in r.json()["error"]


def test_room_topics_create_and_show_in_room(client):
    r = client.post(
        "/api/rooms/general/topics", json={"title": "  Investigation ", "created_by": "alice"}
    )
    assert r.status_code == 201
    topic = r.json()["topic"]
    assert topic["title"] == "Investigation"
    assert topic["created_by"] == "alice"
    assert isinstance(topic["id"], int)
    second = client.post("/api/rooms/general/topics", json={"title": "Next"}).json()["topic"]
    assert second["id"] > topic["id"]
    assert second["created_by"] is None
    topics = client.get("/api/rooms/general").json()["topics"]
    assert [t["title"] for t in topics] == ["Investigation", "Next"]


def test_room_topics_are_per_room(client):
    make_room(client, "ops")
    client.post("/api/rooms/ops/topics", json={"title": "Ops only"})
    assert client.get("/api/rooms/general").json()["topics"] == []


@pytest.mark.parametrize("title", ["", "   ", "x" * 201, None, 5])
def test_room_topics_reject_bad_titles(client, title):
    r = client.post("/api/rooms/general/topics", json={"title": title})
    assert r.status_code == 422
    assert "title" in r.json()["error"]
    assert client.get("/api/rooms/general").json()["topics"] == []


def test_room_topics_unknown_room_is_404(client):
    r = client.post("/api/rooms/nope/topics", json={"title": "x"})
    assert r.status_code == 404
    assert "nope" in r.json()["error"]
