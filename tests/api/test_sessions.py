"""Sessions: one per (agent, room, topic), made on first use; runs and runtime session ids."""

from __future__ import annotations

import threading

import pytest

from pal.store import agents as agents_store
from pal.store import rooms as rooms_store
from pal.store import sessions as sessions_store
from tests.api.computers_helpers import agent_on, make_box, running
from tests.helpers import make_agent, make_room


def ensure(client, **body):
    return client.post("/api/sessions", json=body)


def test_sessions_are_made_on_first_use_then_found(client):
    make_agent(client, "codex", runtime="claude")
    room = make_room(client, "dev")
    r = ensure(client, agent="codex", room="dev", cwd="/src/app")
    assert r.status_code == 201, r.text
    made = r.json()["session"]
    assert made["agent_key"] == "codex"
    assert made["room_id"] == room["id"]
    assert made["topic_id"] is None  # stored as 0, shown as null
    assert made["runtime"] == "claude"  # the agent's runtime
    assert made["cwd"] == "/src/app"
    assert made["runtime_session_id"] is None
    again = ensure(client, agent="codex", room=room["id"], runtime="codex")
    assert again.status_code == 200
    assert again.json()["session"] == made
    assert client.get(f"/api/sessions/{made['id']}").json()["session"] == made


def test_sessions_are_one_per_topic(client):
    make_agent(client, "codex")
    make_agent(client, "claude")
    topic = client.post("/api/rooms/general/topics", json={"title": "t"}).json()["topic"]
    plain = ensure(client, agent="codex", room="general").json()["session"]
    topical = ensure(client, agent="codex", room="general", topic_id=topic["id"])
    assert topical.status_code == 201
    assert topical.json()["session"]["topic_id"] == topic["id"]
    assert topical.json()["session"]["id"] != plain["id"]
    other = ensure(client, agent="claude", room="general", runtime="command").json()["session"]
    assert other["runtime"] == "command"

    def listed(**params):
        r = client.get("/api/sessions", params=params)
        assert r.status_code == 200
        return [s["id"] for s in r.json()["sessions"]]

    everything = listed()
    assert len(everything) == 3
    assert listed(agent="codex") == [plain["id"], topical.json()["session"]["id"]]
    assert listed(agent="claude", room="general") == [other["id"]]
    make_room(client, "empty")
    assert listed(room="empty") == []
    assert client.get("/api/sessions", params={"room": "nowhere"}).status_code == 404


def test_sessions_refuse_unknown_agents_rooms_and_foreign_topics(client):
    make_agent(client, "codex")
    make_room(client, "dev")
    topic = client.post("/api/rooms/dev/topics", json={"title": "t"}).json()["topic"]
    r = ensure(client, agent="nobody", room="general")
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    r = ensure(client, agent="codex", room="nowhere")
    assert r.status_code == 404 and "nowhere" in r.json()["error"]
    r = ensure(client, agent="codex", room="general", topic_id=topic["id"])
    assert r.status_code == 422 and "another room" in r.json()["error"]
    r = ensure(client, agent="codex", room="general", topic_id=9999)
    assert r.status_code == 404
    assert client.get("/api/sessions").json()["sessions"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"room": "general"},
        {"agent": "codex"},
        {"agent": "codex", "room": "general", "topic_id": 0},
        {"agent": "codex", "room": "general", "runtime": "bash"},
        {"agent": "codex", "room": "general", "cwd": ""},
        {"agent": "codex", "room": "general", "extra": 1},
    ],
    ids=str,
)
def test_sessions_reject_bad_bodies(client, body):
    r = ensure(client, **body)
    assert r.status_code == 422, r.text


def test_sessions_remember_the_runtime_session(client):
    make_agent(client, "codex")
    made = ensure(client, agent="codex", room="general", cwd="/a").json()["session"]
    url = f"/api/sessions/{made['id']}/runtime-session"
    r = client.post(url, json={"runtime_session_id": "thread-42"})
    assert r.status_code == 200
    assert r.json()["session"]["runtime_session_id"] == "thread-42"
    assert r.json()["session"]["cwd"] == "/a"
    r = client.post(url, json={"runtime_session_id": "thread-43", "cwd": "/b"})
    shown = client.get(f"/api/sessions/{made['id']}").json()["session"]
    assert shown == r.json()["session"]
    assert (shown["runtime_session_id"], shown["cwd"]) == ("thread-43", "/b")
    for bad in ({"runtime_session_id": ""}, {"runtime_session_id": "x" * 201}, {}):
        assert client.post(url, json=bad).status_code == 422
    r = client.post("/api/sessions/999/runtime-session", json={"runtime_session_id": "x"})
    assert r.status_code == 404


def test_sessions_list_their_runs(client, database):
    box = make_box(database)
    agent_on(client, box)
    session = ensure(client, agent="codex", room="general").json()["session"]
    first = running(client, box, session_id=session["id"])
    running(client, box)  # no session
    second = running(client, box, session_id=session["id"])
    r = client.get(f"/api/sessions/{session['id']}/runs")
    assert r.status_code == 200
    assert [run["id"] for run in r.json()["runs"]] == [second["id"], first["id"]]
    assert client.get("/api/sessions/999/runs").status_code == 404
    assert client.get("/api/sessions/999").status_code == 404


def test_sessions_concurrent_first_use_makes_one(database):
    """Many writers asking for the same new session at once all get the same one."""
    database.write_sync(lambda conn: agents_store.upsert_agent(conn, "codex"))
    room = database.write_sync(rooms_store.ensure_room, "general")
    results: list[tuple[dict, bool]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(
            database.write_sync(
                lambda conn: sessions_store.ensure_session(
                    conn, agent_key="codex", room_id=room["id"], topic_id=None, runtime="codex"
                )
            )
        )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8
    assert len({s["id"] for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1
