"""Computers: provision, list, show, revoke, rotate; connect, heartbeat and the legacy
``POST /api/daemons`` registration (docs/daemon.md)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pal.store import computers as computers_store
from pal.store.computers import key_hash
from pal.store.tables import computers, deliveries, run_actions, runs, utcnow
from tests.helpers import invite, make_agent, post


def provision(client, name: str = "Build box", **fields) -> dict:
    r = client.post("/api/computers/provision", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def connect(client, key: str, **body) -> dict:
    r = client.post("/api/computers/connect", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def heartbeat(client, key: str, computer_id: str, **body):
    body.setdefault("daemon_id", "daemon_abc")
    return client.post(f"/api/computers/{computer_id}/heartbeat", json=body, headers=auth(key))


def assign(client, agent: str, computer_id: str | None) -> None:
    r = client.post(f"/api/agents/{agent}/assignment", json={"computer_id": computer_id})
    assert r.status_code == 200, r.text


def read_row(database, computer_id: str) -> dict:
    def read(conn: sa.Connection) -> dict:
        row = conn.execute(sa.select(computers).where(computers.c.id == computer_id)).first()
        assert row is not None
        return dict(row._mapping)

    return database.read_sync(read)


# --- provision, list, show ---------------------------------------------------------------


def test_provision_returns_the_key_once_and_commands(client):
    made = provision(client, server_url="https://pal.example.com/")
    assert set(made) == {"computer", "api_key", "daemon_command", "source_command"}
    computer, key = made["computer"], made["api_key"]
    assert re.fullmatch(r"machine_[0-9a-f]{16}", computer["id"])
    assert key.startswith("sk_machine_") and len(key) > 40
    assert computer["name"] == "Build box"
    assert computer["status"] == "offline"
    assert computer["last_seen_at"] is None and computer["revoked_at"] is None
    assert computer["agents"] == []
    assert "key_hash" not in computer
    assert made["daemon_command"] == f"pal daemon --server https://pal.example.com --api-key {key}"
    assert made["source_command"] == (
        f"make install && .venv/bin/pal daemon --server https://pal.example.com --api-key {key}"
    )
    # The key is never shown again.
    assert key not in client.get(f"/api/computers/{computer['id']}").text
    assert key not in client.get("/api/computers").text


def test_provision_defaults_the_server_url_to_the_one_called(client):
    made = provision(client)
    assert "--server http://testserver --api-key" in made["daemon_command"]


def test_provision_stores_only_the_hash_of_the_key(client, database):
    made = provision(client)
    row = read_row(database, made["computer"]["id"])
    assert row["key_hash"] == key_hash(made["api_key"])
    assert made["api_key"] not in str(row)


def test_provisioned_keys_and_ids_are_distinct(client):
    one, two = provision(client, "one"), provision(client, "two")
    assert one["api_key"] != two["api_key"]
    assert one["computer"]["id"] != two["computer"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 121},
        {"name": 5},
        {"name": "ok", "server_url": "ftp://host"},
        {"name": "ok", "server_url": "not a url"},
        {"name": "ok", "extra": 1},
    ],
    ids=str,
)
def test_provision_rejects_bad_bodies(client, body):
    r = client.post("/api/computers/provision", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request:")


def test_computers_list_and_show_with_assigned_agents(client):
    first = provision(client, "first")["computer"]
    second = provision(client, "second")["computer"]
    make_agent(client, "codex")
    make_agent(client, "claude")
    make_agent(client, "idle")
    assign(client, "codex", first["id"])
    assign(client, "claude", first["id"])
    listed = client.get("/api/computers").json()["computers"]
    assert [(c["id"], c["agents"]) for c in listed] == [
        (first["id"], ["claude", "codex"]),
        (second["id"], []),
    ]
    assert all("key_hash" not in c for c in listed)
    shown = client.get(f"/api/computers/{first['id']}").json()["computer"]
    assert shown["name"] == "first" and shown["agents"] == ["claude", "codex"]


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("POST", "/revoke"), ("POST", "/rotate")]
)
def test_unknown_computer_is_404(client, method, suffix):
    r = client.request(method, f"/api/computers/machine_nope{suffix}")
    assert r.status_code == 404
    assert "computer 'machine_nope' not found" in r.json()["error"]


# --- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "sk_machine_x"}, {"Authorization": "Basic abc"}, auth("")],
    ids=["none", "no scheme", "basic", "empty"],
)
def test_connect_without_a_credential_is_401_saying_what_to_send(client, headers):
    r = client.post("/api/computers/connect", json={}, headers=headers)
    assert r.status_code == 401
    assert "Authorization: Bearer sk_machine_" in r.json()["error"]


def test_connect_with_a_wrong_key_is_401(client):
    provision(client)
    r = client.post("/api/computers/connect", json={}, headers=auth("sk_machine_garbage"))
    assert r.status_code == 401
    assert "not valid" in r.json()["error"]
    assert "sk_machine_garbage" not in r.text


def test_revoke_stops_the_key_at_once(client):
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]
    connect(client, key)
    r = client.post(f"/api/computers/{computer_id}/revoke")
    assert r.status_code == 200
    revoked = r.json()["computer"]
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    assert client.post("/api/computers/connect", json={}, headers=auth(key)).status_code == 401
    assert heartbeat(client, key, computer_id).status_code == 401
    listed = client.get("/api/computers").json()["computers"]
    assert listed[0]["status"] == "revoked"
    # Revoking again keeps the first time.
    again = client.post(f"/api/computers/{computer_id}/revoke").json()["computer"]
    assert again["revoked_at"] == revoked["revoked_at"]


def test_a_heartbeat_racing_a_revoke_is_401_and_renews_nothing(client, database, monkeypatch):
    """The key was checked just before the revoke committed: the heartbeat's own write sees
    the revoke, so it neither brings the computer back online nor renews its claims."""
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    assign(client, "codex", computer_id)
    delivery = post(client, "hi")["deliveries"][0]
    claim = client.post(
        f"/api/deliveries/{delivery['id']}/claim",
        json={"daemon_id": "daemon_abc"},
        headers=auth(key),
    ).json()["delivery"]
    checked = computers_store.find_by_credential
    before = database.read_sync(checked, key)
    client.post(f"/api/computers/{computer_id}/revoke")
    monkeypatch.setattr(computers_store, "find_by_credential", lambda conn, credential: before)
    r = heartbeat(client, key, computer_id)
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]
    row = read_row(database, computer_id)
    assert row["status"] == "offline"
    held = client.get(f"/api/deliveries/{delivery['id']}").json()["delivery"]
    assert held["lease_until"] == claim["lease_until"]


def test_revoke_clears_the_stored_hash(client, database):
    made = provision(client)
    client.post(f"/api/computers/{made['computer']['id']}/revoke")
    row = read_row(database, made["computer"]["id"])
    assert row["key_hash"] is None and row["revoked_at"] is not None


def test_rotate_gives_a_new_key_and_the_old_one_stops(client):
    made = provision(client)
    old, computer_id = made["api_key"], made["computer"]["id"]
    r = client.post(f"/api/computers/{computer_id}/rotate")
    assert r.status_code == 200
    rotated = r.json()
    assert set(rotated) == {"computer", "api_key", "daemon_command", "source_command"}
    new = rotated["api_key"]
    assert new != old and new.startswith("sk_machine_") and new in rotated["daemon_command"]
    assert rotated["computer"]["id"] == computer_id
    assert client.post("/api/computers/connect", json={}, headers=auth(old)).status_code == 401
    assert connect(client, new)["computer"]["id"] == computer_id


def test_rotate_makes_a_revoked_computer_usable_again(client):
    made = provision(client)
    computer_id = made["computer"]["id"]
    client.post(f"/api/computers/{computer_id}/revoke")
    rotated = client.post(f"/api/computers/{computer_id}/rotate").json()
    assert rotated["computer"]["status"] == "offline"
    assert rotated["computer"]["revoked_at"] is None
    assert connect(client, rotated["api_key"])["computer"]["status"] == "online"
    assert (
        client.post("/api/computers/connect", json={}, headers=auth(made["api_key"])).status_code
        == 401
    )


# --- connect -----------------------------------------------------------------------------

RUNTIMES = [
    {"name": "codex", "available": True, "version": "0.50.0", "path": "/usr/bin/codex"},
    {"name": "claude", "available": False, "error": "not found on PATH"},
]


def test_connect_marks_online_and_lists_assigned_agents(client):
    made = provision(client)
    computer_id = made["computer"]["id"]
    make_agent(client, "codex", description="Writes code", config={"model": "x"})
    make_agent(client, "other")
    assign(client, "codex", computer_id)
    answer = connect(
        client,
        made["api_key"],
        daemon_id="daemon_1a2b",
        platform="linux-x86_64",
        version="0.3.0",
        runtimes=RUNTIMES,
    )
    assert answer["daemon_id"] == "daemon_1a2b"
    assert answer["heartbeat_grace"] == answer["lease_seconds"] == 60
    assert answer["agents"] == [
        {
            "key": "codex",
            "display_name": "codex",
            "runtime": "codex",
            "description": "Writes code",
            "config": {"model": "x"},
        }
    ]
    computer = answer["computer"]
    assert computer["status"] == "online"
    assert computer["connected_at"] is not None and computer["last_seen_at"] is not None
    assert (computer["platform"], computer["version"]) == ("linux-x86_64", "0.3.0")
    assert computer["runtimes"] == RUNTIMES
    shown = client.get(f"/api/computers/{computer_id}").json()["computer"]
    assert shown["status"] == "online" and shown["runtimes"] == RUNTIMES


def test_connect_makes_a_daemon_id_when_none_is_given(client):
    key = provision(client)["api_key"]
    first, second = connect(client, key), connect(client, key)
    assert re.fullmatch(r"daemon_[0-9a-f]{16}", first["daemon_id"])
    assert first["daemon_id"] != second["daemon_id"]
    assert first["agents"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"daemon_id": "daemon_"},
        {"daemon_id": "worker_1"},
        {"daemon_id": "daemon_a-b"},
        {"daemon_id": "daemon_" + "a" * 57},
        {"runtimes": "codex"},
        {"runtimes": [{"name": "codex"}]},
        {"runtimes": [{"name": "codex", "available": "maybe"}]},
        {"runtimes": [{"name": "", "available": True}]},
        {"runtimes": [{"name": "codex", "available": True, "colour": "red"}]},
        {"runtimes": [{"name": f"r{i}", "available": True} for i in range(33)]},
        {"platform": "x" * 65},
        {"version": "x" * 33},
    ],
    ids=str,
)
def test_connect_rejects_bad_bodies(client, body):
    key = provision(client)["api_key"]
    r = client.post("/api/computers/connect", json=body, headers=auth(key))
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request:")


# --- heartbeat ---------------------------------------------------------------------------


def test_heartbeat_answers_assignments_and_lease(client):
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]
    make_agent(client, "codex")
    assign(client, "codex", computer_id)
    connect(client, key, daemon_id="daemon_abc")
    before = datetime.now(UTC)
    r = heartbeat(client, key, computer_id, agents=["codex"], runtimes=RUNTIMES[:1])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {
        "computer",
        "assignments_changed",
        "agents",
        "control_requests",
        "lease_until",
    }
    assert answer["assignments_changed"] is False
    assert [a["key"] for a in answer["agents"]] == ["codex"]
    assert answer["control_requests"] == []
    assert answer["computer"]["status"] == "online"
    assert answer["computer"]["runtimes"] == RUNTIMES[:1]
    lease_until = datetime.fromisoformat(answer["lease_until"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=59) < lease_until < before + timedelta(seconds=70)


def test_heartbeat_reports_changed_assignments(client):
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]
    make_agent(client, "codex")
    make_agent(client, "claude")
    assert heartbeat(client, key, computer_id).json()["assignments_changed"] is False
    assign(client, "codex", computer_id)
    answer = heartbeat(client, key, computer_id, agents=[]).json()
    assert answer["assignments_changed"] is True
    assert [a["key"] for a in answer["agents"]] == ["codex"]
    assert (
        heartbeat(client, key, computer_id, agents=["codex"]).json()["assignments_changed"] is False
    )
    # Serving an agent that is no longer assigned is a change too.
    assign(client, "codex", None)
    answer = heartbeat(client, key, computer_id, agents=["codex"]).json()
    assert answer["assignments_changed"] is True and answer["agents"] == []


def test_heartbeat_renews_the_leases_this_daemon_holds(client, database):
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]
    make_agent(client, "codex")
    make_agent(client, "claude")
    invite(client, "general", "codex", "all")
    invite(client, "general", "claude", "all")
    created = {d["agent_key"]: d["id"] for d in post(client, "hello")["deliveries"]}
    soon = utcnow() + timedelta(seconds=5)

    def claim(conn: sa.Connection) -> None:
        for agent, daemon in (("codex", "daemon_abc"), ("claude", "daemon_other")):
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == created[agent])
                .values(
                    status="claimed",
                    computer_id=computer_id,
                    claimed_by=daemon,
                    attempt=1,
                    lease_until=soon,
                )
            )

    database.write_sync(claim)
    answer = heartbeat(client, key, computer_id, daemon_id="daemon_abc").json()
    listed = {d["agent_key"]: d for d in client.get("/api/deliveries").json()["deliveries"]}
    assert listed["codex"]["lease_until"] == answer["lease_until"]
    # Another daemon's claim keeps its lease.
    assert datetime.fromisoformat(listed["claude"]["lease_until"].replace("Z", "+00:00")) == soon


def test_heartbeat_carries_control_requests(client, database):
    made = provision(client)
    key, computer_id = made["api_key"], made["computer"]["id"]

    def write(conn: sa.Connection) -> int:
        now = utcnow()
        run_id = conn.execute(
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
        return conn.execute(
            run_actions.insert()
            .values(
                run_id=run_id,
                computer_id=computer_id,
                action="kill",
                status="pending",
                created_at=now,
                updated_at=now,
            )
            .returning(run_actions.c.id)
        ).scalar_one()

    action_id = database.write_sync(write)
    requests = heartbeat(client, key, computer_id).json()["control_requests"]
    assert [(r["id"], r["action"]) for r in requests] == [(action_id, "kill")]
    # Repeated until the daemon reports it done.
    again = heartbeat(client, key, computer_id).json()["control_requests"]
    assert [r["id"] for r in again] == [action_id]


def test_heartbeat_for_another_computer_is_403(client):
    mine = provision(client, "mine")
    theirs = provision(client, "theirs")["computer"]["id"]
    r = heartbeat(client, mine["api_key"], theirs)
    assert r.status_code == 403
    assert "use that computer's own API key" in r.json()["error"]
    assert heartbeat(client, mine["api_key"], "machine_nope").status_code == 403


def test_heartbeat_without_a_credential_is_401(client):
    computer_id = provision(client)["computer"]["id"]
    r = client.post(f"/api/computers/{computer_id}/heartbeat", json={"daemon_id": "daemon_a"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"daemon_id": "nope"}, {"daemon_id": "daemon_a", "agents": ["bad key"]}],
    ids=str,
)
def test_heartbeat_rejects_bad_bodies(client, body):
    made = provision(client)
    r = client.post(
        f"/api/computers/{made['computer']['id']}/heartbeat",
        json=body,
        headers=auth(made["api_key"]),
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request:")


# --- legacy POST /api/daemons ------------------------------------------------------------


def test_legacy_register_creates_the_computer_and_then_checks_the_secret(client, database):
    r = client.post(
        "/api/daemons",
        json={"computer_id": "laptop", "computer_secret": "s3cret", "platform": "darwin"},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"computer", "daemon_id", "agents", "heartbeat_grace", "lease_seconds"}
    assert answer["computer"]["id"] == "laptop"
    assert answer["computer"]["name"] == "laptop"
    assert answer["computer"]["status"] == "online"
    assert read_row(database, "laptop")["key_hash"] == key_hash("laptop:s3cret")
    # The daemon then authenticates with <id>:<secret>.
    assert connect(client, "laptop:s3cret")["computer"]["id"] == "laptop"
    again = client.post("/api/daemons", json={"computer_id": "laptop", "computer_secret": "s3cret"})
    assert again.status_code == 200
    wrong = client.post("/api/daemons", json={"computer_id": "laptop", "computer_secret": "guess"})
    assert wrong.status_code == 401
    assert "does not match" in wrong.json()["error"]
    assert "guess" not in wrong.text


def test_legacy_register_creates_and_assigns_the_agent(client):
    r = client.post(
        "/api/daemons",
        json={"computer_id": "box", "computer_secret": "pw", "agent": "codex", "name": "Box"},
    )
    assert r.status_code == 200, r.text
    assert [a["key"] for a in r.json()["agents"]] == ["codex"]
    assert r.json()["computer"]["name"] == "Box"
    agent = client.get("/api/agents/codex").json()["agent"]
    assert (agent["display_name"], agent["runtime"], agent["computer_id"]) == (
        "codex",
        "codex",
        "box",
    )
    # An existing agent keeps its fields and moves to this computer.
    make_agent(client, "claude", runtime="claude")
    r = client.post(
        "/api/daemons", json={"computer_id": "box", "computer_secret": "pw", "agent": "claude"}
    )
    assert [a["key"] for a in r.json()["agents"]] == ["claude", "codex"]
    assert client.get("/api/agents/claude").json()["agent"]["runtime"] == "claude"


def test_legacy_register_of_a_revoked_computer_is_401(client):
    client.post("/api/daemons", json={"computer_id": "box", "computer_secret": "pw"})
    client.post("/api/computers/box/revoke")
    r = client.post("/api/daemons", json={"computer_id": "box", "computer_secret": "pw"})
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]
    assert client.post("/api/computers/connect", json={}, headers=auth("box:pw")).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"computer_secret": "pw"},
        {"computer_id": "box"},
        {"computer_id": "box", "computer_secret": ""},
        {"computer_id": "box", "computer_secret": "x" * 201},
        {"computer_id": "-box", "computer_secret": "pw"},
        {"computer_id": "b" * 41, "computer_secret": "pw"},
        {"computer_id": "box", "computer_secret": "pw", "agent": "bad key"},
        {"computer_id": "box", "computer_secret": "pw", "daemon_id": "x"},
    ],
    ids=str,
)
def test_legacy_register_rejects_bad_bodies(client, body):
    r = client.post("/api/daemons", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request:")


def test_keys_never_reach_the_log(client, caplog):
    caplog.set_level(logging.DEBUG)
    made = provision(client)
    rotated = client.post(f"/api/computers/{made['computer']['id']}/rotate").json()
    connect(client, rotated["api_key"])
    client.post("/api/computers/connect", json={}, headers=auth(made["api_key"]))
    client.post("/api/daemons", json={"computer_id": "box", "computer_secret": "hush-hush"})
    client.post("/api/daemons", json={"computer_id": "box", "computer_secret": "wrong-one"})
    assert "computer_provisioned" in [getattr(r, "action", None) for r in caplog.records]
    for secret in (made["api_key"], rotated["api_key"], "hush-hush", "wrong-one", "sk_machine_"):
        assert secret not in caplog.text
