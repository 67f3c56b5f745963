"""Agents: create or update, onboard, edit, delete (with its subscriptions), assign."""

from __future__ import annotations

import pytest

from tests.helpers import invite, make_agent, make_computer, post, set_delivery_status


def test_agents_create_fills_defaults(client):
    r = client.post("/api/agents", json={"key": "codex"})
    assert r.status_code == 201
    assert r.json()["created"] is True
    agent = r.json()["agent"]
    assert agent["key"] == "codex"
    assert agent["display_name"] == "codex"
    assert agent["runtime"] == "codex"
    assert agent["description"] == ""
    assert agent["config"] == {}
    assert agent["computer_id"] is None
    assert agent["created_at"].endswith("Z")
    assert client.get("/api/agents/codex").json()["agent"] == agent


def test_agents_create_accepts_the_seed_field_names(client):
    r = client.post(
        "/api/agents",
        json={"agent_key": "rev", "name": "Reviewer", "runtime": "claude", "desc": "Reviews"},
    )
    assert r.status_code == 201
    agent = r.json()["agent"]
    assert (agent["key"], agent["display_name"], agent["runtime"], agent["description"]) == (
        "rev",
        "Reviewer",
        "claude",
        "Reviews",
    )


def test_agents_post_existing_updates_only_given_fields(client):
    make_agent(client, "codex", display_name="Codex", description="Main", config={"a": 1})
    r = client.post("/api/agents", json={"key": "codex", "runtime": "claude"})
    assert r.status_code == 200
    assert r.json()["created"] is False
    agent = client.get("/api/agents/codex").json()["agent"]
    assert (agent["display_name"], agent["runtime"], agent["description"], agent["config"]) == (
        "Codex",
        "claude",
        "Main",
        {"a": 1},
    )
    assert agent["updated_at"] >= agent["created_at"]
    assert len(client.get("/api/agents").json()["agents"]) == 1


def test_agents_list_is_sorted_by_key(client):
    for key in ("zeta", "alpha", "mid"):
        make_agent(client, key)
    assert [a["key"] for a in client.get("/api/agents").json()["agents"]] == [
        "alpha",
        "mid",
        "zeta",
    ]


def test_agents_get_unknown_is_404_naming_it(client):
    r = client.get("/api/agents/ghost")
    assert r.status_code == 404
    assert "agent 'ghost'" in r.json()["error"]


@pytest.mark.parametrize("key", ["", "-x", "has space", "a" * 41, "dot.ted", "ü", None, 5])
def test_agents_create_rejects_invalid_keys(client, key):
    r = client.post("/api/agents", json={"key": key})
    assert r.status_code == 422
    assert "key" in r.json()["error"]
    assert client.get("/api/agents").json()["agents"] == []


def test_agents_create_rejects_unknown_runtime_listing_valid_ones(client):
    r = client.post("/api/agents", json={"key": "codex", "runtime": "gpt"})
    assert r.status_code == 422
    assert "runtime" in r.json()["error"] and "codex" in r.json()["error"]


@pytest.mark.parametrize(
    "fields",
    [
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "x" * 121},
        {"description": "x" * 4001},
        {"config": []},
        {"config": {"n": 2**70}},
        {"config": {"s": "nul\u0000"}},
    ],
    ids=str,
)
def test_agents_create_rejects_bad_fields(client, fields):
    r = client.post("/api/agents", json={"key": "codex", **fields})
    assert r.status_code == 422
    assert next(iter(fields)) in r.json()["error"]
    assert client.get("/api/agents").json()["agents"] == []


def test_agents_onboard_without_computer_creates(client):
    r = client.post(
        "/api/agents/onboard",
        json={"agent_key": "codex", "display_name": "Codex Agent", "runtime": "codex"},
    )
    assert r.status_code == 201
    assert r.json()["created"] is True
    assert r.json()["agent"]["display_name"] == "Codex Agent"
    again = client.post("/api/agents/onboard", json={"agent_key": "codex", "desc": "Main"})
    assert again.status_code == 200
    assert again.json()["agent"]["description"] == "Main"


def test_agents_onboard_assigns_to_the_computer(client, database):
    computer = make_computer(database)
    r = client.post("/api/agents/onboard", json={"agent_key": "codex", "computer_id": computer})
    assert r.status_code == 201
    assert r.json()["agent"]["computer_id"] == computer
    assert client.get("/api/agents/codex").json()["agent"]["computer_id"] == computer


def test_agents_onboard_unknown_computer_is_404_and_writes_nothing(client):
    r = client.post(
        "/api/agents/onboard", json={"agent_key": "codex", "computer_id": "machine_nope"}
    )
    assert r.status_code == 404
    assert "computer 'machine_nope'" in r.json()["error"]
    assert client.get("/api/agents/codex").status_code == 404


def test_agents_onboard_unknown_computer_leaves_existing_agent_unchanged(client):
    make_agent(client, "codex", display_name="Before")
    r = client.post(
        "/api/agents/onboard",
        json={"agent_key": "codex", "display_name": "After", "computer_id": "machine_nope"},
    )
    assert r.status_code == 404
    assert client.get("/api/agents/codex").json()["agent"]["display_name"] == "Before"


def test_agents_patch_changes_given_fields(client):
    make_agent(client, "codex", description="old")
    r = client.patch(
        "/api/agents/codex",
        json={"display_name": "New", "runtime": "command", "config": {"argv": ["x"]}},
    )
    assert r.status_code == 200
    agent = r.json()["agent"]
    assert (agent["display_name"], agent["runtime"], agent["description"], agent["config"]) == (
        "New",
        "command",
        "old",
        {"argv": ["x"]},
    )
    assert client.get("/api/agents/codex").json()["agent"]["display_name"] == "New"


def test_agents_patch_unknown_is_404_and_creates_nothing(client):
    r = client.patch("/api/agents/ghost", json={"display_name": "Boo"})
    assert r.status_code == 404
    assert "ghost" in r.json()["error"]
    assert client.get("/api/agents").json()["agents"] == []


@pytest.mark.parametrize(
    "body", [{"key": "other"}, {"runtime": "gpt"}, {"display_name": 5}], ids=str
)
def test_agents_patch_rejects_bad_bodies(client, body):
    make_agent(client, "codex")
    r = client.patch("/api/agents/codex", json=body)
    assert r.status_code == 422
    assert next(iter(body)) in r.json()["error"]


def test_agents_delete_removes_agent_memberships_and_active_deliveries(client, database):
    make_agent(client, "codex")
    make_agent(client, "other")
    invite(client, "general", "codex", "all")
    invite(client, "general", "other", "all")
    done = post(client, "first")["deliveries"]
    post(client, "second")
    codex_done = next(d for d in done if d["agent_key"] == "codex")
    set_delivery_status(database, codex_done["id"], "acked")

    r = client.delete("/api/agents/codex")
    assert r.status_code == 200
    body = r.json()
    assert body["agent"]["key"] == "codex"
    assert body["removed"] == {"memberships": 1, "deliveries": 1}

    assert client.get("/api/agents/codex").status_code == 404
    members = client.get("/api/rooms/general/members").json()["members"]
    assert [m["member"] for m in members] == ["other"]
    left = client.get("/api/deliveries", params={"agent": "codex"}).json()["deliveries"]
    assert [(d["id"], d["status"]) for d in left] == [(codex_done["id"], "acked")]
    assert len(client.get("/api/deliveries", params={"agent": "other"}).json()["deliveries"]) == 2
    # a later message reaches nobody under that key
    assert all(d["agent_key"] != "codex" for d in post(client, "@codex hi?")["deliveries"])


def test_agents_delete_removes_its_assignment(client, database):
    computer = make_computer(database)
    make_agent(client, "codex")
    client.post("/api/agents/codex/assignment", json={"computer_id": computer})
    assert client.delete("/api/agents/codex").status_code == 200
    # re-creating the key starts fresh: no assignment carried over
    assert make_agent(client, "codex")["computer_id"] is None


def test_agents_delete_unknown_is_404(client):
    r = client.delete("/api/agents/ghost")
    assert r.status_code == 404
    assert "agent 'ghost'" in r.json()["error"]


def test_agents_assignment_assigns_and_unassigns(client, database):
    computer = make_computer(database)
    make_agent(client, "codex")
    r = client.post("/api/agents/codex/assignment", json={"computer_id": computer})
    assert r.status_code == 200
    assert r.json()["agent"]["computer_id"] == computer
    assert client.get("/api/agents/codex").json()["agent"]["computer_id"] == computer
    r = client.post("/api/agents/codex/assignment", json={"computer_id": None})
    assert r.status_code == 200
    assert client.get("/api/agents/codex").json()["agent"]["computer_id"] is None


def test_agents_assignment_unknown_computer_is_404_and_keeps_the_old_one(client, database):
    computer = make_computer(database)
    make_agent(client, "codex")
    client.post("/api/agents/codex/assignment", json={"computer_id": computer})
    r = client.post("/api/agents/codex/assignment", json={"computer_id": "machine_nope"})
    assert r.status_code == 404
    assert "computer 'machine_nope'" in r.json()["error"]
    assert client.get("/api/agents/codex").json()["agent"]["computer_id"] == computer


def test_agents_assignment_unknown_agent_is_404(client, database):
    computer = make_computer(database)
    r = client.post("/api/agents/ghost/assignment", json={"computer_id": computer})
    assert r.status_code == 404
    assert "agent 'ghost'" in r.json()["error"]


@pytest.mark.parametrize("body", [{}, {"computer_id": ""}, {"computer_id": 5}], ids=str)
def test_agents_assignment_rejects_bad_bodies(client, body):
    make_agent(client, "codex")
    r = client.post("/api/agents/codex/assignment", json=body)
    assert r.status_code == 422
    assert "computer_id" in r.json()["error"]
