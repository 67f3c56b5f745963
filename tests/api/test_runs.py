"""Runs: start (acking the claim), pid, finish, list, and kill / restart requests."""

from __future__ import annotations

import pytest

from pal.store import run_actions as actions_store
from pal.store import runs as runs_store
from pal.store.tables import utcnow
from tests.api.computers_helpers import (
    agent_on,
    claimed,
    hub_events,
    make_box,
    pending_delivery,
    running,
    start_run,
)
from tests.helpers import invite, make_agent, make_room, post


def finish(client, box, run, **body):
    return client.post(f"/api/runs/{run['id']}/finish", json=body, headers=box.headers)


def runs(client, **params):
    r = client.get("/api/runs", params=params)
    assert r.status_code == 200, r.text
    return [run["id"] for run in r.json()["runs"]]


def test_runs_start_acks_the_delivery_and_records_the_run(client, database):
    box = make_box(database)
    agent_on(client, box, runtime="claude")
    room = make_room(client, "dev")
    invite(client, "dev", "codex", "all")
    topic = client.post("/api/rooms/dev/topics", json={"title": "bugs"}).json()["topic"]
    body = post(client, "fix it", room="dev", topic=topic["id"])
    delivery = claimed(client, box, body["deliveries"][0]["id"])
    with hub_events(client) as events:
        r = start_run(client, box, delivery, pid=4321)
        assert r.status_code == 201, r.text
        published = [e for e in events() if e["kind"] == "run"]
    run, acked = r.json()["run"], r.json()["delivery"]
    assert acked["status"] == "acked" and acked["id"] == delivery["id"]
    assert run["status"] == "running"
    assert run["delivery_id"] == delivery["id"]
    assert run["message_id"] == body["message"]["id"]
    assert run["room_id"] == room["id"]
    assert run["topic_id"] == topic["id"]
    assert run["agent_key"] == "codex"
    assert run["computer_id"] == box.id
    assert run["daemon_id"] == box.daemon_id
    assert run["runtime"] == "claude"  # the agent's runtime
    assert run["pid"] == 4321
    assert run["dry_run"] is False
    assert run["finished_at"] is None
    assert published == [
        {
            "id": published[0]["id"],
            "kind": "run",
            "run_id": run["id"],
            "status": "running",
            "agent_key": "codex",
            "room_id": room["id"],
        }
    ]
    shown = client.get(f"/api/runs/{run['id']}").json()
    assert shown == {"run": run, "actions": []}


def test_runs_start_retried_answers_the_same_run(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    first = start_run(client, box, delivery, runtime="command", dry_run=True)
    assert first.status_code == 201
    again = start_run(client, box, delivery, runtime="command", dry_run=True)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["run"]["runtime"] == "command"
    assert first.json()["run"]["dry_run"] is True
    assert len(runs(client)) == 1


def test_runs_start_after_a_separate_ack_records_the_run(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = client.post(
        f"/api/deliveries/{delivery['id']}/ack",
        json={"daemon_id": box.daemon_id, "attempt": 1},
        headers=box.headers,
    )
    assert r.status_code == 200
    assert start_run(client, box, delivery).status_code == 201


def test_runs_start_with_a_stale_attempt_or_another_daemon_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = start_run(client, box, {**delivery, "attempt": 2})
    assert r.status_code == 409
    assert "stale" in r.json()["error"]
    r = start_run(client, box, delivery, daemon_id="daemon_other")
    assert r.status_code == 409
    assert runs(client) == []
    assert client.get(f"/api/deliveries/{delivery['id']}").json()["delivery"]["status"] == (
        "claimed"
    )


def test_runs_start_for_an_unclaimed_or_unknown_delivery(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    r = start_run(client, box, {**delivery, "attempt": 1})
    assert r.status_code == 409
    assert "pending" in r.json()["error"]
    r = start_run(client, box, {"id": 999, "attempt": 1})
    assert r.status_code == 404
    assert runs(client) == []


def test_runs_start_checks_its_session_and_restart_of(client, database):
    box = make_box(database)
    agent_on(client, box)
    make_agent(client, "claude")
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = start_run(client, box, delivery, session_id=77)
    assert r.status_code == 404
    assert "session" in r.json()["error"]
    other = client.post("/api/sessions", json={"agent": "claude", "room": "general"})
    r = start_run(client, box, delivery, session_id=other.json()["session"]["id"])
    assert r.status_code == 409
    assert "belongs to agent 'claude'" in r.json()["error"]
    r = start_run(client, box, delivery, restart_of=55)
    assert r.status_code == 404
    # nothing was acked by the refused starts
    assert client.get(f"/api/deliveries/{delivery['id']}").json()["delivery"]["status"] == (
        "claimed"
    )
    mine = client.post("/api/sessions", json={"agent": "codex", "room": "general"})
    r = start_run(client, box, delivery, session_id=mine.json()["session"]["id"])
    assert r.status_code == 201
    assert r.json()["run"]["session_id"] == mine.json()["session"]["id"]


def test_runs_start_a_restart_as_a_new_run_of_the_same_delivery(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    first = start_run(client, box, delivery).json()["run"]
    r = start_run(client, box, delivery, restart_of=first["id"])
    assert r.status_code == 201
    restart = r.json()["run"]
    assert restart["id"] != first["id"] and restart["restart_of"] == first["id"]
    again = start_run(client, box, delivery, restart_of=first["id"])
    assert again.status_code == 200
    assert again.json()["run"]["id"] == restart["id"]


def test_runs_start_refuses_a_restart_of_another_deliverys_run(client, database):
    box = make_box(database)
    agent_on(client, box)
    other_run = running(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex", "again")["id"])
    r = start_run(client, box, delivery, restart_of=other_run["id"])
    assert r.status_code == 409
    assert f"run {other_run['id']} is not a run of delivery {delivery['id']}" in r.json()["error"]
    assert client.get(f"/api/deliveries/{delivery['id']}").json()["delivery"]["status"] == (
        "claimed"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"attempt": 1, "daemon_id": "d1"},
        {"delivery_id": 1, "daemon_id": "d1"},
        {"delivery_id": 1, "attempt": 1},
        {"delivery_id": 1, "attempt": 1, "daemon_id": "d1", "pid": 0},
        {"delivery_id": 1, "attempt": 1, "daemon_id": "d1", "runtime": "bash"},
        {"delivery_id": 1, "attempt": 1, "daemon_id": "d1", "session_id": "x"},
        {"delivery_id": 1, "attempt": 1, "daemon_id": "d1", "colour": "red"},
    ],
    ids=str,
)
def test_runs_start_rejects_bad_bodies(client, database, body):
    box = make_box(database)
    r = client.post("/api/runs", json=body, headers=box.headers)
    assert r.status_code == 422, r.text


def test_runs_start_needs_a_computer_key(client):
    r = client.post("/api/runs", json={"delivery_id": 1, "attempt": 1, "daemon_id": "d1"})
    assert r.status_code == 401


# -- list and show ---------------------------------------------------------------------------


def test_runs_list_filters_newest_first(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    agent_on(client, other, "claude")
    dev = make_room(client, "dev")
    invite(client, "dev", "codex", "all")
    a = running(client, box)["id"]
    b = running(client, other, "claude")["id"]
    delivery = claimed(client, box, post(client, "x", room="dev")["deliveries"][0]["id"])
    c = start_run(client, box, delivery).json()["run"]["id"]
    assert finish(client, box, {"id": a}, status="completed").status_code == 200

    assert runs(client) == [c, b, a]
    assert runs(client, agent="codex") == [c, a]
    assert runs(client, status="running") == [c, b]
    assert runs(client, status="completed") == [a]
    assert runs(client, computer=other.id) == [b]
    assert runs(client, room="dev") == [c]
    assert runs(client, room=dev["id"]) == [c]
    assert runs(client, before=c) == [b, a]
    assert runs(client, limit=1) == [c]
    assert runs(client, agent="nobody") == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"limit": 0},
        {"before": 0},
        {"agent": "a" * 41},
        {"agent": "a\x00b"},
        {"computer": "machine_\x00"},
        {"computer": "a b"},
    ],
    ids=str,
)
def test_runs_list_rejects_bad_parameters(client, params):
    r = client.get("/api/runs", params=params)
    assert r.status_code == 422
    assert next(iter(params)) in r.json()["error"]


def test_runs_list_of_an_unknown_room_is_404(client):
    r = client.get("/api/runs", params={"room": "nowhere"})
    assert r.status_code == 404
    assert "nowhere" in r.json()["error"]


def test_runs_get_unknown_is_404(client):
    r = client.get("/api/runs/999")
    assert r.status_code == 404
    assert "run 999" in r.json()["error"]


# -- pid and finish --------------------------------------------------------------------------


def test_runs_pid_is_set_by_its_own_computer_only(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    run = running(client, box)
    r = client.post(f"/api/runs/{run['id']}/pid", json={"pid": 99}, headers=box.headers)
    assert r.status_code == 200
    assert r.json()["run"]["pid"] == 99
    r = client.post(f"/api/runs/{run['id']}/pid", json={"pid": 5}, headers=other.headers)
    assert r.status_code == 403
    assert box.id in r.json()["error"]
    r = client.post(f"/api/runs/{run['id']}/pid", json={"pid": 0}, headers=box.headers)
    assert r.status_code == 422
    r = client.post("/api/runs/999/pid", json={"pid": 5}, headers=box.headers)
    assert r.status_code == 404
    assert client.get(f"/api/runs/{run['id']}").json()["run"]["pid"] == 99


def test_runs_finish_records_the_outcome_once(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    outcome = {"status": "failed", "exit_code": 2, "error": "tests fail", "usage": {"tokens": 12}}
    with hub_events(client) as events:
        r = finish(client, box, run, **outcome)
        assert r.status_code == 200, r.text
        assert [(e["run_id"], e["status"]) for e in events() if e["kind"] == "run"] == [
            (run["id"], "failed")
        ]
        finished = r.json()["run"]
        assert {k: finished[k] for k in outcome} == outcome
        assert finished["finished_at"] is not None
        again = finish(client, box, run, **outcome)
        assert again.status_code == 200
        assert again.json()["run"] == finished
        assert events() == []  # an idempotent repeat announces nothing
    r = finish(client, box, run, status="completed", exit_code=0)
    assert r.status_code == 409
    assert "already finished as failed" in r.json()["error"]
    assert client.get(f"/api/runs/{run['id']}").json()["run"] == finished


def test_runs_finish_of_a_lost_run_records_the_real_outcome(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    lost = database.write_sync(
        lambda conn: runs_store.mark_lost(conn, [box.id], error="silent", now=utcnow())
    )
    assert [r["id"] for r in lost] == [run["id"]]
    assert client.get(f"/api/runs/{run['id']}").json()["run"]["status"] == "lost"
    r = finish(client, box, run, status="completed", exit_code=0)
    assert r.status_code == 200
    assert r.json()["run"]["status"] == "completed"
    assert r.json()["run"]["error"] is None


def test_runs_finish_by_another_computer_is_403(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    run = running(client, box)
    r = finish(client, other, run, status="completed")
    assert r.status_code == 403
    assert client.get(f"/api/runs/{run['id']}").json()["run"]["status"] == "running"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "running"},
        {"status": "lost"},
        {"status": "completed", "exit_code": "0"},
        {"status": "completed", "usage": [1]},
        {"status": "completed", "error": ""},
    ],
    ids=str,
)
def test_runs_finish_rejects_bad_bodies(client, database, body):
    box = make_box(database)
    r = client.post("/api/runs/1/finish", json=body, headers=box.headers)
    assert r.status_code == 422, r.text


def test_runs_finish_unknown_is_404(client, database):
    box = make_box(database)
    assert finish(client, box, {"id": 999}, status="completed").status_code == 404


# -- kill and restart ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["kill", "restart"])
def test_runs_kill_and_restart_record_a_pending_action(client, database, action):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    with hub_events(client) as events:
        r = client.post(f"/api/runs/{run['id']}/{action}", json={"requested_by": "alice"})
        assert r.status_code == 202, r.text
        published = [e for e in events() if e["kind"] == "run_action"]
    made = r.json()["action"]
    assert made["action"] == action
    assert made["status"] == "pending"
    assert made["run_id"] == run["id"]
    assert made["computer_id"] == box.id
    assert made["requested_by"] == "alice"
    assert [(e["action_id"], e["run_id"], e["computer_id"]) for e in published] == [
        (made["id"], run["id"], box.id)
    ]
    # asking again while it is open answers the same request
    again = client.post(f"/api/runs/{run['id']}/{action}")
    assert again.status_code == 202
    assert again.json()["action"]["id"] == made["id"]
    assert client.get(f"/api/runs/{run['id']}").json()["actions"] == [made]


def test_runs_actions_reach_the_heartbeat_until_done(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    kill = client.post(f"/api/runs/{run['id']}/kill").json()["action"]
    sent = database.write_sync(actions_store.pending_for_computer, box.id)
    assert [(a["id"], a["action"], a["status"]) for a in sent] == [(kill["id"], "kill", "sent")]
    assert set(sent[0]) == {"id", "run_id", "action", "status", "created_at"}
    # repeated in every heartbeat while open; another computer sees none of it
    assert database.write_sync(actions_store.pending_for_computer, box.id) == sent
    assert database.write_sync(actions_store.pending_for_computer, "machine_other") == []


def test_runs_kill_of_a_finished_run_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    finish(client, box, run, status="completed")
    r = client.post(f"/api/runs/{run['id']}/kill")
    assert r.status_code == 409
    assert "completed" in r.json()["error"]
    assert client.post("/api/runs/999/restart").status_code == 404


def test_runs_room_restart_restarts_the_agents_newest_running_run(client, database):
    box = make_box(database)
    agent_on(client, box)
    running(client, box)
    newest = running(client, box)
    r = client.post("/api/rooms/general/agents/codex/restart", json={"requested_by": "bob"})
    assert r.status_code == 202, r.text
    assert r.json()["run"]["id"] == newest["id"]
    assert r.json()["action"]["action"] == "restart"
    assert r.json()["action"]["run_id"] == newest["id"]


def test_runs_room_restart_without_a_running_run_is_404(client, database):
    box = make_box(database)
    agent_on(client, box)
    make_room(client, "dev")
    r = client.post("/api/rooms/dev/agents/codex/restart")
    assert r.status_code == 404
    assert r.json()["error"] == "agent 'codex' has no running run in room 'dev': nothing to restart"
    r = client.post("/api/rooms/nowhere/agents/codex/restart")
    assert r.status_code == 404
    assert "nowhere" in r.json()["error"]


# -- action reports --------------------------------------------------------------------------


def report(client, box, action, **body):
    return client.post(
        f"/api/runs/{action['run_id']}/actions/{action['id']}", json=body, headers=box.headers
    )


def test_runs_action_reported_done_leaves_the_heartbeat(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    kill = client.post(f"/api/runs/{run['id']}/kill").json()["action"]
    database.write_sync(actions_store.pending_for_computer, box.id)  # now "sent"
    r = report(client, box, kill, status="done")
    assert r.status_code == 200, r.text
    done = r.json()["action"]
    assert (done["id"], done["status"], done["error"], done["action"]) == (
        kill["id"],
        "done",
        None,
        "kill",
    )
    assert done["updated_at"] >= kill["updated_at"]
    assert client.get(f"/api/runs/{run['id']}").json()["actions"] == [done]
    assert database.write_sync(actions_store.pending_for_computer, box.id) == []
    # the same report again answers the action unchanged; another status is 409
    again = report(client, box, kill, status="done", error="ignored")
    assert again.status_code == 200
    assert again.json()["action"] == done
    r = report(client, box, kill, status="failed", error="too late")
    assert r.status_code == 409
    assert "already reported done" in r.json()["error"]
    # a new kill can be asked for once the old one is closed
    fresh = client.post(f"/api/runs/{run['id']}/kill").json()["action"]
    assert fresh["id"] != kill["id"]


def test_runs_action_reported_failed_keeps_the_reason(client, database):
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    restart = client.post(f"/api/runs/{run['id']}/restart").json()["action"]
    r = report(client, box, restart, status="failed", error="the run was not running here")
    assert r.status_code == 200, r.text
    failed = r.json()["action"]
    assert (failed["status"], failed["error"]) == ("failed", "the run was not running here")
    assert report(client, box, restart, status="failed").json()["action"] == failed
    assert report(client, box, restart, status="done").status_code == 409


def test_runs_action_report_by_another_computer_or_for_another_run(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    run = running(client, box)
    second = running(client, box)
    kill = client.post(f"/api/runs/{run['id']}/kill").json()["action"]
    r = report(client, other, kill, status="done")
    assert r.status_code == 403
    assert box.id in r.json()["error"]
    r = report(client, box, {**kill, "run_id": second["id"]}, status="done")
    assert r.status_code == 404
    assert r.json()["error"] == f"run {second['id']} has no action {kill['id']}"
    r = report(client, box, {**kill, "id": 999}, status="done")
    assert r.status_code == 404
    r = report(client, box, {**kill, "run_id": 999}, status="done")
    assert r.status_code == 404
    assert r.json()["error"] == "run 999 not found"
    r = client.post(f"/api/runs/{run['id']}/actions/{kill['id']}", json={"status": "done"})
    assert r.status_code == 401
    assert client.get(f"/api/runs/{run['id']}").json()["actions"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/runs/1/actions/1", {}),
        ("/api/runs/1/actions/1", {"status": "sent"}),
        ("/api/runs/1/actions/1", {"status": "done", "error": ""}),
        ("/api/runs/1/actions/1", {"status": "done", "error": "a\x00b"}),
        ("/api/runs/1/actions/1", {"status": "done", "colour": "red"}),
        ("/api/runs/1/actions/x", {"status": "done"}),
        ("/api/runs/x/actions/1", {"status": "done"}),
    ],
    ids=str,
)
def test_runs_action_report_rejects_bad_requests(client, database, path, body):
    box = make_box(database)
    r = client.post(path, json=body, headers=box.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("invalid request: ")


def test_runs_restart_of_a_killed_run_starts_a_new_run(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    first = start_run(client, box, delivery).json()["run"]
    assert finish(client, box, first, status="killed", exit_code=-15).status_code == 200
    r = start_run(client, box, delivery, restart_of=first["id"])
    assert r.status_code == 201, r.text
    restart = r.json()["run"]
    assert (restart["restart_of"], restart["status"], restart["delivery_id"]) == (
        first["id"],
        "running",
        delivery["id"],
    )
    assert (restart["output_bytes"], restart["output_dropped"]) == (0, 0)
    assert start_run(client, box, delivery, restart_of=first["id"]).json()["run"] == restart
    assert client.get(f"/api/runs/{first['id']}").json()["run"]["status"] == "killed"
