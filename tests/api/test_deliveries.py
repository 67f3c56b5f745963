"""Deliveries: list with filters and cursors, show, and create by hand."""

from __future__ import annotations

import pytest

from tests.helpers import invite, make_agent, post, set_delivery_status


def deliveries(client, **params) -> list[dict]:
    r = client.get("/api/deliveries", params=params)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def test_deliveries_list_empty_on_a_fresh_install(client):
    assert deliveries(client) == []


def test_deliveries_list_filters_by_agent_and_status(client, database):
    make_agent(client, "codex")
    make_agent(client, "claude")
    invite(client, "general", "codex", "all")
    invite(client, "general", "claude", "all")
    first = post(client, "one")["deliveries"]
    post(client, "two")
    assert len(deliveries(client)) == 4
    codex = deliveries(client, agent="codex")
    assert [d["agent_key"] for d in codex] == ["codex", "codex"]
    acked = next(d for d in first if d["agent_key"] == "claude")
    set_delivery_status(database, acked["id"], "acked")
    assert [d["id"] for d in deliveries(client, status="acked")] == [acked["id"]]
    assert len(deliveries(client, status="pending")) == 3
    assert deliveries(client, agent="claude", status="acked")[0]["id"] == acked["id"]
    assert deliveries(client, agent="nobody") == []


def test_deliveries_list_pages_in_id_order(client):
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    for i in range(5):
        post(client, f"m{i}")
    all_ids = [d["id"] for d in deliveries(client)]
    assert all_ids == sorted(all_ids) and len(all_ids) == 5
    assert [d["id"] for d in deliveries(client, limit=2)] == all_ids[:2]
    assert [d["id"] for d in deliveries(client, after=all_ids[2])] == all_ids[3:]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": 2**63},
        {"agent": "a" * 41},
        {"agent": "bad key"},
    ],
    ids=str,
)
def test_deliveries_list_rejects_bad_parameters(client, params):
    r = client.get("/api/deliveries", params=params)
    assert r.status_code == 422
    assert next(iter(params)) in r.json()["error"]


def test_deliveries_get_shows_one(client):
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    created = post(client, "hi")["deliveries"][0]
    shown = client.get(f"/api/deliveries/{created['id']}").json()["delivery"]
    assert shown == created
    assert shown["status"] == "pending"
    assert shown["attempt"] == 0


def test_deliveries_get_unknown_is_404_naming_it(client):
    r = client.get("/api/deliveries/4242")
    assert r.status_code == 404
    assert "delivery 4242" in r.json()["error"]


@pytest.mark.parametrize("ref", ["x", str(2**63)])
def test_deliveries_get_rejects_non_ids(client, ref):
    r = client.get(f"/api/deliveries/{ref}")
    assert r.status_code == 422
    assert "delivery_id" in r.json()["error"]


def test_deliveries_create_by_hand_is_pending_with_reason_manual(client):
    make_agent(client, "codex")
    topic = client.post("/api/rooms/general/topics", json={"title": "T"}).json()["topic"]
    message = post(client, "look at this", topic=topic["id"])["message"]
    r = client.post("/api/deliveries", json={"agent": "codex", "message_id": message["id"]})
    assert r.status_code == 201
    delivery = r.json()["delivery"]
    assert delivery["agent_key"] == "codex"
    assert delivery["message_id"] == message["id"]
    assert delivery["room_id"] == message["room_id"]
    assert delivery["topic_id"] == topic["id"]
    assert (delivery["reason"], delivery["status"]) == ("manual", "pending")
    assert client.get(f"/api/deliveries/{delivery['id']}").json()["delivery"] == delivery
    inbox = client.get("/api/inbox", params={"agent": "codex"}).json()["messages"]
    assert [(m["id"], m["delivery_reason"]) for m in inbox] == [(message["id"], "manual")]


def test_deliveries_create_accepts_agent_key_alias_and_a_reason(client):
    make_agent(client, "codex")
    message = post(client, "x")["message"]
    r = client.post(
        "/api/deliveries",
        json={"agent_key": "codex", "message_id": message["id"], "reason": "debate"},
    )
    assert r.status_code == 201
    assert r.json()["delivery"]["reason"] == "debate"


def test_deliveries_create_twice_for_the_same_message_is_409(client):
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    message = post(client, "x")["message"]  # routing already made one
    r = client.post("/api/deliveries", json={"agent": "codex", "message_id": message["id"]})
    assert r.status_code == 409
    assert "codex" in r.json()["error"] and str(message["id"]) in r.json()["error"]
    assert len(deliveries(client)) == 1


def test_deliveries_create_unknown_agent_is_404(client):
    message = post(client, "x")["message"]
    r = client.post("/api/deliveries", json={"agent": "ghost", "message_id": message["id"]})
    assert r.status_code == 404
    assert "agent 'ghost'" in r.json()["error"]
    assert deliveries(client) == []


def test_deliveries_create_unknown_message_is_404(client):
    make_agent(client, "codex")
    r = client.post("/api/deliveries", json={"agent": "codex", "message_id": 999})
    assert r.status_code == 404
    assert "message 999" in r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"agent": "codex"},
        {"agent": "codex", "message_id": "1"},
        {"agent": "codex", "message_id": 0},
        {"agent": "codex", "message_id": 2**63},
        {"agent": "codex", "message_id": 1, "reason": ""},
        {"agent": "codex", "message_id": 1, "reason": "x" * 65},
        {"agent": "bad key", "message_id": 1},
    ],
    ids=str,
)
def test_deliveries_create_rejects_bad_bodies(client, body):
    make_agent(client, "codex")
    post(client, "x")
    r = client.post("/api/deliveries", json=body)
    assert r.status_code == 422
    assert deliveries(client) == []
