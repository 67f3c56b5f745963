"""The daemon socket: authentication, and the wake-up hints it forwards (ids only)."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from pal.server.api.daemon_ws import hints
from pal.server.hub import QUEUE_SIZE
from pal.store import computers as computers_store
from pal.store.tables import runs, utcnow
from tests.conftest import wait_until
from tests.helpers import invite, make_agent, post


def provision(client, name: str = "Build box") -> tuple[str, str]:
    r = client.post("/api/computers/provision", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()["computer"]["id"], r.json()["api_key"]


def assign(client, agent: str, computer_id: str | None) -> None:
    r = client.post(f"/api/agents/{agent}/assignment", json={"computer_id": computer_id})
    assert r.status_code == 200, r.text


def open_socket(client, key: str, daemon_id: str = "daemon_abc"):
    return client.websocket_connect(
        f"/api/daemon/ws?daemon_id={daemon_id}", headers={"Authorization": f"Bearer {key}"}
    )


@pytest.fixture
def box(client) -> tuple[str, str]:
    """A computer with agent ``codex`` assigned; ``other`` exists and is unassigned. Both
    are members of ``general`` (mode mentions)."""
    computer_id, key = provision(client)
    for agent in ("codex", "other"):
        make_agent(client, agent)
        invite(client, "general", agent)
    assign(client, "codex", computer_id)
    return computer_id, key


def delivery_ids(body: dict, agent: str) -> list[int]:
    return [d["id"] for d in body["deliveries"] if d["agent_key"] == agent]


# --- handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk_machine_wrong"}, {"Authorization": "Basic x"}],
    ids=["none", "wrong key", "basic"],
)
def test_socket_without_a_valid_credential_is_refused_with_401(client, headers):
    provision(client)
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect("/api/daemon/ws?daemon_id=daemon_a", headers=headers):
            pass
    assert refused.value.status_code == 401
    assert "computer API key" in refused.value.json()["error"]
    assert "sk_machine_wrong" not in refused.value.text


def test_socket_with_a_bad_daemon_id_is_refused_with_422(client):
    _, key = provision(client)
    with pytest.raises(WebSocketDenialResponse) as refused:
        with open_socket(client, key, daemon_id="worker-1"):
            pass
    assert refused.value.status_code == 422
    assert "daemon_id" in refused.value.json()["error"]


def test_socket_says_hello(client, box):
    computer_id, key = box
    with open_socket(client, key, "daemon_1a2b") as ws:
        assert ws.receive_json() == {
            "type": "hello",
            "computer_id": computer_id,
            "daemon_id": "daemon_1a2b",
        }


def test_socket_works_with_a_legacy_credential(client):
    r = client.post("/api/daemons", json={"computer_id": "box", "computer_secret": "pw"})
    assert r.status_code == 200
    with open_socket(client, "box:pw") as ws:
        assert ws.receive_json()["computer_id"] == "box"


# --- hints -------------------------------------------------------------------------------


def test_socket_hints_deliveries_of_assigned_agents_only(client, box):
    _, key = box
    with open_socket(client, key) as ws:
        ws.receive_json()  # hello
        post(client, "@other have a look")  # not assigned here: no hint
        body = post(client, "@codex please fix the build")
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "codex",
            "ids": delivery_ids(body, "codex"),
        }


def test_socket_hints_manual_deliveries(client, box):
    _, key = box
    message = post(client, "no mention")["message"]
    with open_socket(client, key) as ws:
        ws.receive_json()
        r = client.post("/api/deliveries", json={"agent": "codex", "message_id": message["id"]})
        assert r.status_code == 201
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "codex",
            "ids": [r.json()["delivery"]["id"]],
        }


def test_socket_follows_assignments(client, box):
    computer_id, key = box
    with open_socket(client, key) as ws:
        ws.receive_json()
        assign(client, "other", computer_id)
        assert ws.receive_json() == {"type": "assignments"}
        body = post(client, "@other now yours")
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "other",
            "ids": delivery_ids(body, "other"),
        }
        assign(client, "other", None)
        assert ws.receive_json() == {"type": "assignments"}
        post(client, "@other not any more")
        body = post(client, "@codex still yours")
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "codex",
            "ids": delivery_ids(body, "codex"),
        }


@pytest.mark.parametrize(
    "change",
    [
        lambda client: client.patch("/api/agents/codex", json={"runtime": "claude"}),
        lambda client: client.post("/api/agents", json={"key": "codex", "description": "x"}),
        lambda client: client.post("/api/agents/onboard", json={"key": "codex", "name": "C"}),
        lambda client: client.delete("/api/agents/codex"),
    ],
    ids=["patch", "post", "onboard", "delete"],
)
def test_socket_hints_changes_to_an_assigned_agent(client, box, change):
    _, key = box
    with open_socket(client, key) as ws:
        ws.receive_json()
        assert change(client).status_code == 200
        assert ws.receive_json() == {"type": "assignments"}


def test_socket_hints_onboarding_onto_this_computer(client, box):
    computer_id, key = box
    other_id, _ = provision(client, "elsewhere")
    with open_socket(client, key) as ws:
        ws.receive_json()
        # Onboarding onto another computer is not this daemon's business...
        r = client.post("/api/agents/onboard", json={"key": "far", "computer_id": other_id})
        assert r.status_code == 201
        r = client.post("/api/agents/onboard", json={"key": "near", "computer_id": computer_id})
        assert r.status_code == 201
        assert ws.receive_json() == {"type": "assignments"}
        # ...but moving one of its agents away is.
        assign(client, "codex", other_id)
        assert ws.receive_json() == {"type": "assignments"}


def test_socket_forwards_run_action_events_for_this_computer(client, box):
    computer_id, key = box
    hub = client.app.state.hub
    with open_socket(client, key) as ws:
        ws.receive_json()
        client.portal.call(lambda: hub.publish("run_action", computer_id="machine_x", action_id=4))
        client.portal.call(lambda: hub.publish("run_action", computer_id=computer_id, action_id=5))
        assert ws.receive_json() == {"type": "run_action", "ids": [5]}


def test_socket_hints_a_kill_requested_for_a_run_on_this_computer(client, box, database):
    computer_id, key = box

    def start(conn: sa.Connection) -> int:
        now = utcnow()
        run_id: int = conn.execute(
            runs.insert()
            .values(
                agent_key="codex",
                computer_id=computer_id,
                status="running",
                started_at=now,
                updated_at=now,
            )
            .returning(runs.c.id)
        ).scalar_one()
        return run_id

    run_id = database.write_sync(start)
    with open_socket(client, key) as ws:
        ws.receive_json()
        r = client.post(f"/api/runs/{run_id}/kill", json={})
        assert r.status_code == 202, r.text
        assert ws.receive_json() == {"type": "run_action", "ids": [r.json()["action"]["id"]]}


def test_socket_closes_with_4401_when_the_key_is_revoked(client, box):
    computer_id, key = box
    with open_socket(client, key) as ws:
        ws.receive_json()
        assert client.post(f"/api/computers/{computer_id}/revoke").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401
    with pytest.raises(WebSocketDenialResponse) as refused:
        with open_socket(client, key):
            pass
    assert refused.value.status_code == 401


def test_socket_closes_with_4401_when_the_key_is_rotated(client, box):
    computer_id, key = box
    other_id, other_key = provision(client, "other box")
    with open_socket(client, key) as ws, open_socket(client, other_key) as unaffected:
        ws.receive_json()
        unaffected.receive_json()
        assert client.post(f"/api/computers/{computer_id}/rotate").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401
        assign(client, "other", other_id)
        assert unaffected.receive_json() == {"type": "assignments"}


def test_socket_sends_resync_after_falling_behind_and_keeps_hinting(client, box):
    _, key = box
    hub = client.app.state.hub

    def flood() -> None:
        for _ in range(QUEUE_SIZE + 1):
            hub.publish("delivery", agent_key="someone_else", delivery_id=1)

    with open_socket(client, key) as ws:
        ws.receive_json()
        client.portal.call(flood)
        assert ws.receive_json() == {"type": "resync"}
        body = post(client, "@codex after the flood")
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "codex",
            "ids": delivery_ids(body, "codex"),
        }


def test_events_a_daemon_does_not_need_never_fill_its_socket(client, box):
    _, key = box
    hub = client.app.state.hub

    def flood() -> None:
        for _ in range(QUEUE_SIZE + 1):
            hub.publish("run_output", run_id=1, seq=1)
            hub.publish("message", room_id="room_x", message_id=1)

    with open_socket(client, key) as ws:
        ws.receive_json()
        client.portal.call(flood)
        body = post(client, "@codex after the output")
        assert ws.receive_json() == {
            "type": "deliveries",
            "agent": "codex",
            "ids": delivery_ids(body, "codex"),
        }


def test_socket_closes_with_4401_when_a_revoke_is_lost_while_it_fell_behind(client, box, database):
    """The hub dropped the socket's events, the revoke among them: the socket checks its key
    again before it resyncs, and closes."""
    computer_id, key = box
    hub = client.app.state.hub

    def flood() -> None:
        for _ in range(QUEUE_SIZE + 1):
            hub.publish("delivery", agent_key="someone_else", delivery_id=1)

    with open_socket(client, key) as ws:
        ws.receive_json()
        database.write_sync(computers_store.revoke_computer, computer_id)  # no hub event
        client.portal.call(flood)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401


def test_socket_disconnect_is_clean(client, box, caplog):
    caplog.set_level(logging.INFO, logger="pal")
    _, key = box
    before = set(client.app.state.hub._subscribers)  # the server's own (the Lark bridge)
    with open_socket(client, key) as ws:
        ws.receive_json()
        ws.close()  # the daemon leaves; the server notices on its own
        wait_until(
            lambda: "daemon_socket_closed" in [getattr(r, "action", None) for r in caplog.records]
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert key not in caplog.text
    # The hub forgot the socket: posting still works and nothing is left subscribed.
    post(client, "@codex anyone there?")
    assert set(client.app.state.hub._subscribers) == before


# --- batching (pure) ---------------------------------------------------------------------


def test_hints_batch_deliveries_per_agent_in_order():
    keys = {"codex", "claude"}
    events = [
        {"id": 1, "kind": "delivery", "agent_key": "codex", "delivery_id": 10},
        {"id": 2, "kind": "message", "room_id": "r", "message_id": 3},
        {"id": 3, "kind": "delivery", "agent_key": "other", "delivery_id": 11},
        {"id": 4, "kind": "delivery", "agent_key": "claude", "delivery_id": 12},
        {"id": 5, "kind": "delivery", "agent_key": "codex", "delivery_id": 13},
    ]
    assert hints(events, "machine_a", keys) == [
        {"type": "deliveries", "agent": "codex", "ids": [10, 13]},
        {"type": "deliveries", "agent": "claude", "ids": [12]},
    ]


def test_hints_apply_assignments_in_event_order():
    keys = {"codex"}
    events = [
        {"id": 1, "kind": "delivery", "agent_key": "new", "delivery_id": 1},
        {
            "id": 2,
            "kind": "assignment",
            "agent_key": "new",
            "computer_id": "machine_a",
            "previous_computer_id": None,
        },
        {"id": 3, "kind": "delivery", "agent_key": "new", "delivery_id": 2},
        {
            "id": 4,
            "kind": "assignment",
            "agent_key": "codex",
            "computer_id": "machine_b",
            "previous_computer_id": "machine_a",
        },
        {"id": 5, "kind": "delivery", "agent_key": "codex", "delivery_id": 3},
    ]
    assert hints(events, "machine_a", keys) == [
        {"type": "assignments"},
        {"type": "deliveries", "agent": "new", "ids": [2]},
    ]
    assert keys == {"new"}


def test_hints_ignore_other_computers_and_flag_overflow():
    keys = {"codex"}
    events = [
        {
            "id": 1,
            "kind": "assignment",
            "agent_key": "x",
            "computer_id": "machine_b",
            "previous_computer_id": None,
        },
        {"id": 2, "kind": "computer_revoked", "computer_id": "machine_b"},
        None,
    ]
    assert hints(events, "machine_a", keys) == [{"type": "resync"}]
    assert keys == {"codex"}
