"""Liveness: silent computers go offline, their claims return to pending and their runs
become lost; expired leases are released; the sweep task keeps running in the server."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.server import liveness
from pal.server.app import create_app
from pal.server.hub import Hub
from pal.store import deliveries as deliveries_store
from pal.store import liveness as liveness_store
from pal.store import runs as runs_store
from pal.store.db import Database
from pal.store.tables import deliveries, utcnow
from tests.api.computers_helpers import (
    agent_on,
    claimed,
    computer_row,
    hub_events,
    make_box,
    pending_delivery,
    running,
    set_last_seen,
    start_run,
)
from tests.conftest import wait_until

GRACE = 60.0


def sweep(database: Database, grace: float = GRACE) -> dict[str, list[dict[str, Any]]]:
    return database.write_sync(liveness_store.sweep, utcnow(), grace)


def delivery(client, delivery_id):
    return client.get(f"/api/deliveries/{delivery_id}").json()["delivery"]


def run_of(client, run_id):
    return client.get(f"/api/runs/{run_id}").json()["run"]


def test_sweep_marks_a_silent_computer_offline_and_releases_its_work(client, database):
    silent = make_box(database, "silent")
    live = make_box(database, "live")
    agent_on(client, silent, "codex")
    agent_on(client, live, "claude")
    held = claimed(client, silent, pending_delivery(client, "codex")["id"])
    lost_run = running(client, silent, "codex")
    kept = claimed(client, live, pending_delivery(client, "claude")["id"])
    live_run = running(client, live, "claude")
    set_last_seen(database, silent.id, utcnow() - timedelta(seconds=125))

    summary = sweep(database)

    assert [c["id"] for c in summary["offline"]] == [silent.id]
    assert sorted(d["id"] for d in summary["released"]) == [held["id"]]
    assert [r["id"] for r in summary["lost"]] == [lost_run["id"]]
    assert computer_row(database, silent.id)["status"] == "offline"
    assert computer_row(database, live.id)["status"] == "online"
    released = delivery(client, held["id"])
    assert released["status"] == "pending"
    assert (released["computer_id"], released["claimed_by"], released["lease_until"]) == (
        None,
        None,
        None,
    )
    assert released["attempt"] == 1
    lost = run_of(client, lost_run["id"])
    assert lost["status"] == "lost"
    assert "missed heartbeats for 125 s" in lost["error"]
    # the acked delivery of the lost run stays acked: its run is what was lost
    assert delivery(client, lost_run["delivery_id"])["status"] == "acked"
    # nothing of the live computer moved
    assert delivery(client, kept["id"])["status"] == "claimed"
    assert run_of(client, live_run["id"])["status"] == "running"
    # a second sweep finds nothing more to do
    assert sweep(database) == {"offline": [], "released": [], "lost": []}


def test_sweep_releases_the_work_of_a_revoked_computer(client, database):
    box = make_box(database)
    agent_on(client, box)
    held = claimed(client, box, pending_delivery(client, "codex")["id"])
    run = running(client, box)
    r = client.post(f"/api/computers/{box.id}/revoke")
    assert r.status_code == 200, r.text
    summary = sweep(database)
    assert summary["offline"] == []  # already offline: revoking did that
    assert [d["id"] for d in summary["released"]] == [held["id"]]
    assert [r["id"] for r in summary["lost"]] == [run["id"]]
    assert "revoked" in run_of(client, run["id"])["error"]
    assert delivery(client, held["id"])["status"] == "pending"
    assert sweep(database) == {"offline": [], "released": [], "lost": []}


def test_sweep_leaves_computers_seen_within_the_grace(client, database):
    box = make_box(database)
    agent_on(client, box)
    held = claimed(client, box, pending_delivery(client, "codex")["id"])
    set_last_seen(database, box.id, utcnow() - timedelta(seconds=GRACE - 5))
    assert sweep(database) == {"offline": [], "released": [], "lost": []}
    assert delivery(client, held["id"])["status"] == "claimed"
    assert computer_row(database, box.id)["status"] == "online"


def test_sweep_releases_expired_leases_of_a_live_computer(client, database):
    box = make_box(database)
    agent_on(client, box)
    expired = claimed(client, box, pending_delivery(client, "codex")["id"])
    fresh = claimed(client, box, pending_delivery(client, "codex")["id"])

    def expire(conn: sa.Connection) -> None:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id == expired["id"])
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )

    database.write_sync(expire)
    summary = sweep(database)
    assert summary["offline"] == [] and summary["lost"] == []
    assert summary["released"] == [{"id": expired["id"], "agent_key": "codex"}]
    assert delivery(client, expired["id"])["status"] == "pending"
    assert delivery(client, fresh["id"])["status"] == "claimed"
    assert computer_row(database, box.id)["status"] == "online"
    # another claim takes it as the next attempt
    assert claimed(client, box, expired["id"])["attempt"] == 2


def test_a_start_after_the_lease_was_released_is_409_and_runs_once(client, database):
    """A daemon that claimed, went quiet past its lease and then starts the run: by then the
    claim went back to pending and another daemon took it, so the late start is refused and
    the delivery runs once."""
    box = make_box(database)
    agent_on(client, box)
    late = claimed(client, box, pending_delivery(client, "codex")["id"])
    database.write_sync(
        lambda conn: conn.execute(
            deliveries.update()
            .where(deliveries.c.id == late["id"])
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    )
    sweep(database)
    r = start_run(client, box, late)
    assert r.status_code == 409
    assert "pending" in r.json()["error"]
    taken = claimed(client, box, late["id"], "daemon_next")
    assert start_run(client, box, late).status_code == 409  # attempt 1 is stale now
    r = start_run(client, box, taken, daemon_id="daemon_next")
    assert r.status_code == 201, r.text
    assert [run["delivery_id"] for run in client.get("/api/runs").json()["runs"]] == [late["id"]]


def test_heartbeat_lease_renewal_keeps_a_claim(client, database):
    box = make_box(database)
    agent_on(client, box)
    held = claimed(client, box, pending_delivery(client, "codex")["id"])
    later = utcnow() + timedelta(seconds=3 * GRACE)
    renewed = database.write_sync(
        lambda conn: deliveries_store.renew_leases(
            conn, computer_id=box.id, daemon_id=box.daemon_id, until=later
        )
    )
    assert renewed == 1
    other = database.write_sync(
        lambda conn: deliveries_store.renew_leases(
            conn, computer_id=box.id, daemon_id="daemon_other", until=later
        )
    )
    assert other == 0
    # two graces from now the lease still holds, where the claim's own lease had ended
    summary = database.write_sync(
        liveness_store.sweep, utcnow() + timedelta(seconds=2 * GRACE), 10 * GRACE
    )
    assert summary["released"] == []
    assert delivery(client, held["id"])["status"] == "claimed"


def test_a_run_whose_daemon_stopped_heartbeating_is_lost_on_a_live_computer(client, database):
    """A daemon killed and replaced (a new daemon_id on the same, still online computer):
    the old daemon's runs are lost once their lease ends; the new daemon's are kept."""
    box = make_box(database)
    agent_on(client, box)
    old = running(client, box)
    assert run_of(client, old["id"])["lease_until"] is not None
    replacement = box.__class__(box.id, box.key, "daemon_replacement")
    kept = running(client, replacement)
    later = utcnow() + timedelta(seconds=2 * GRACE)
    # only the replacement keeps heartbeating, which also keeps the computer online
    r = client.post(
        f"/api/computers/{box.id}/heartbeat",
        json={"daemon_id": replacement.daemon_id, "agents": ["codex"]},
        headers={"Authorization": f"Bearer {box.key}"},
    )
    assert r.status_code == 200, r.text
    database.write_sync(
        lambda conn: runs_store.renew_leases(
            conn, computer_id=box.id, daemon_id=replacement.daemon_id, until=later
        )
    )
    summary = database.write_sync(
        liveness_store.sweep, utcnow() + timedelta(seconds=GRACE + 1), 10 * GRACE
    )
    assert summary["offline"] == []
    assert [run["id"] for run in summary["lost"]] == [old["id"]]
    lost = run_of(client, old["id"])
    assert lost["status"] == "lost" and "stopped heartbeating" in lost["error"]
    assert run_of(client, kept["id"])["status"] == "running"


@pytest.mark.parametrize("grace", [1.0, 4.0, 40.0, 60.0, 3600.0])
def test_sweep_period_is_a_quarter_grace_up_to_10_seconds(grace):
    assert liveness.period(grace) == min(10.0, grace / 4)


# -- the sweep task in a running server --------------------------------------------------------


@pytest.fixture
def fast_client(database: Database, tmp_path) -> Any:
    """The app with a 1 s heartbeat grace (a sweep every 0.25 s)."""
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home")}, db_url=database.url, heartbeat_grace=1.0
    )
    with TestClient(create_app(settings, database=database)) as test_client:
        yield test_client


def test_sweep_task_releases_a_silent_computers_work(fast_client, database, caplog):
    client = fast_client
    caplog.set_level(logging.INFO, logger="pal.server.liveness")
    # seen "tomorrow" while the test sets up, so no sweep can interfere before it is ready
    box = make_box(database, last_seen_at=utcnow() + timedelta(days=1))
    agent_on(client, box)
    with client.app.state.hub.subscribe() as queue:
        held = claimed(client, box, pending_delivery(client, "codex")["id"])
        run = running(client, box)
        set_last_seen(database, box.id, utcnow())
        seen: list[dict[str, Any]] = []

        def announced() -> bool:
            while not queue.empty():
                seen.append(queue.get_nowait())
            kinds = {e["kind"] for e in seen}
            return {"computer", "run"} <= kinds and any(
                e["kind"] == "delivery" and e["delivery_id"] == held["id"] for e in seen
            )

        # no heartbeat: after 1 s of silence plus one sweep, the work is released
        wait_until(announced, timeout=10)
    assert computer_row(database, box.id)["status"] == "offline"
    assert delivery(client, held["id"])["status"] == "pending"
    assert run_of(client, run["id"])["status"] == "lost"
    computer_events = [e for e in seen if e["kind"] == "computer"]
    assert computer_events[0]["computer_id"] == box.id
    assert computer_events[0]["status"] == "offline"
    lost = [e for e in seen if e["kind"] == "run" and e["status"] == "lost"]
    assert [(e["run_id"], e["agent_key"]) for e in lost] == [(run["id"], "codex")]
    offline_logs = [r for r in caplog.records if getattr(r, "action", "") == "computer_offline"]
    assert [r.computer_id for r in offline_logs] == [box.id]  # type: ignore[attr-defined]


# -- the sweep loop survives failures ----------------------------------------------------------


class FlakyDatabase:
    """Fails the first ``failures`` writes, then answers an empty sweep."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.done = asyncio.Event()

    async def write(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("database went away")
        if self.calls >= self.failures + 2:
            self.done.set()
        return {"offline": [], "released": [], "lost": []}


async def test_sweep_forever_logs_failures_and_keeps_sweeping(caplog):
    db = FlakyDatabase(failures=2)
    task = asyncio.create_task(liveness.sweep_forever(db, Hub(), grace=0.04))  # type: ignore[arg-type]
    await asyncio.wait_for(db.done.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failures = [r for r in caplog.records if getattr(r, "action", "") == "sweep_failed"]
    assert len(failures) == 2
    assert "database went away" in failures[0].exc_text  # type: ignore[operator]


def test_a_heartbeat_that_brings_a_computer_back_online_is_published_once(client, database):
    box = make_box(database, status="offline", last_seen_at=utcnow() - timedelta(hours=1))

    def beat(runtimes: list[dict[str, Any]] | None = None) -> None:
        body: dict[str, Any] = {"daemon_id": box.daemon_id, "agents": []}
        if runtimes is not None:
            body["runtimes"] = runtimes
        r = client.post(f"/api/computers/{box.id}/heartbeat", json=body, headers=box.headers)
        assert r.status_code == 200, r.text

    with hub_events(client) as events:
        beat()
        assert [(e["kind"], e["computer_id"], e["status"]) for e in events()] == [
            ("computer", box.id, "online")
        ]
        beat()
        assert events() == []  # a plain heartbeat is no news
        beat([{"name": "codex", "available": True, "version": "0.171.0"}])
        assert [e["kind"] for e in events()] == ["computer"]  # other runtimes are
