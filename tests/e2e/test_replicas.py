"""Two ``pal server`` processes on one PostgreSQL database (server/replicas.py).

Replica A and replica B share a database of their own. A real daemon with the fake ``codex``
is connected to A only, with a heartbeat of 5 minutes: within a test it learns of new work
only from its socket's hints, so a message or a kill request sent to B reaches it only
through PostgreSQL LISTEN/NOTIFY.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, wait_until
from tests.e2e.conftest import ServerProcess, start_server
from tests.e2e.daemon_process import DaemonProcess, provision, start_daemon
from tests.fakes import install_fakes

pytestmark = pytest.mark.e2e

KILL_GRACE = 1.0
# Far longer than any test: the daemon's heartbeat (which also drains) never fires in one.
SLOW_HEARTBEAT_MS = "300000"
_rooms = itertools.count(1)


def api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, server.url + path, timeout=10, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def send(server: ServerProcess, room: str, text: str, *, mention: str | None = "codex") -> Any:
    body = {"room": room, "sender": "alice", "mentions": [mention] if mention else []}
    return api(server, "POST", "/api/messages", json={**body, "content": text})


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    daemon: DaemonProcess
    db_url: str

    def room(self) -> str:
        name = f"work-{next(_rooms)}"
        api(self.a, "POST", "/api/rooms", json={"name": name})
        return name

    def runs(self, room: str) -> list[dict[str, Any]]:
        found = api(self.b, "GET", "/api/runs", params={"room": room, "limit": 100})["runs"]
        return sorted(found, key=lambda r: r["id"])

    def wait_run(self, room: str, status: str, count: int = 1, timeout: float = 30) -> list[Any]:
        def found() -> list[dict[str, Any]] | None:
            runs = [r for r in self.runs(room) if r["status"] == status]
            return runs if len(runs) >= count else None

        try:
            result: list[dict[str, Any]] = wait_until(found, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"runs in {room}: {self.runs(room)}\n--- daemon log:\n{self.daemon.output()}"
            ) from None
        return result


@pytest.fixture(scope="module")
def replicas_db(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of this module's own (the replicas migrate it on start)."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"pal_e2e_replicas_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(postgres_url).set(database=name)
    yield url.render_as_string(hide_password=False).replace("+psycopg", "")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, replicas_db: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    env = {"PAL_DB": replicas_db, "PAL_HEARTBEAT_GRACE": "900"}
    a = start_server(root / "a", env)
    b = start_server(root / "b", env)
    bin_dir = install_fakes(root / "bin")
    (root / "codex-home").mkdir()
    computer_id, api_key = provision(b)
    daemon = start_daemon(
        a,
        "--interval",
        SLOW_HEARTBEAT_MS,
        api_key=api_key,
        home=root / "daemon",
        extra_env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "CODEX_HOME": str(root / "codex-home"),
            "FAKE_RECORD_DIR": str(root),
            "PAL_KILL_GRACE": str(KILL_GRACE),
        },
    )
    body = {"agent_key": "codex", "display_name": "Codex", "runtime": "codex"}
    api(b, "POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
    try:
        yield Cluster(a, b, daemon, replicas_db)
    finally:
        daemon.terminate()
        b.stop()
        a.stop()


def test_both_replicas_listen_for_each_other(cluster: Cluster) -> None:
    for server in (cluster.a, cluster.b):
        health = api(server, "GET", "/health")
        assert health["database"] == "postgresql" and health["replicas"] == {"listening": True}


def test_a_message_posted_to_b_wakes_the_daemon_connected_to_a(cluster: Cluster) -> None:
    room = cluster.room()
    posted = time.monotonic()
    send(cluster.b, room, "hello from the other replica")
    [run] = cluster.wait_run(room, "completed", timeout=30)
    assert time.monotonic() - posted < 30  # the heartbeat is minutes away: a hint woke it
    replies = api(cluster.b, "GET", "/api/messages", params={"room": room})["messages"]
    assert [m["content"] for m in replies if m["sender"] == "codex"] == [
        f"fake codex: done (run {run['id']})"
    ]


def test_restart_and_kill_sent_to_b_reach_the_daemon_on_a(cluster: Cluster) -> None:
    room = cluster.room()
    send(cluster.a, room, "[fake:sleep=120] long job")
    [first] = cluster.wait_run(room, "running")
    wait_until(lambda: api(cluster.a, "GET", f"/api/runs/{first['id']}")["run"]["pid"])

    api(cluster.b, "POST", f"/api/rooms/{room}/agents/codex/restart", json={})
    [old] = cluster.wait_run(room, "killed", timeout=KILL_GRACE + 15)
    [new] = cluster.wait_run(room, "running")
    assert old["id"] == first["id"] and old["error"] == "killed to restart it"
    assert new["restart_of"] == first["id"]

    api(cluster.b, "POST", f"/api/runs/{new['id']}/kill", json={"requested_by": "alice"})
    killed = cluster.wait_run(room, "killed", count=2, timeout=KILL_GRACE + 15)
    assert [r["error"] for r in killed] == ["killed to restart it", "killed on request"]


def sse_frames(
    lines: Iterator[str], timeout: float = 20
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """``(event, data, id)`` of each frame of an event stream (comments skipped); fails once
    ``timeout`` seconds have passed (checked on every line: the server pings every 15 s)."""
    deadline = time.monotonic() + timeout
    kind, data, event_id = "", "", None
    for line in lines:
        assert time.monotonic() < deadline, "the expected event did not come"
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and kind:
            yield kind, orjson.loads(data), event_id
            kind, data, event_id = "", "", None


def next_message(frames: Iterator[tuple[str, dict[str, Any], str | None]], message_id: int) -> Any:
    for kind, data, event_id in frames:
        assert kind != "resync", "the stream lost events"
        if kind == "message" and data["message_id"] == message_id:
            return data, event_id
    raise AssertionError("the stream ended")


def test_live_events_of_b_stream_from_a_and_resume_there(cluster: Cluster) -> None:
    room = cluster.room()
    params = {"kinds": "message"}
    with httpx.stream("GET", f"{cluster.a.url}/api/events", params=params, timeout=20) as stream:
        frames = sse_frames(stream.iter_lines())
        kind, hello, _ = next(frames)
        assert kind == "hello"
        posted = send(cluster.b, room, "seen on a", mention=None)["message"]
        data, event_id = next_message(frames, posted["id"])
    assert data["room_id"] == posted["room_id"]
    assert event_id is not None and event_id.startswith(hello["boot"] + "-")  # numbered by a

    # while nobody listens, b gets another message: a client resuming on a gets it, no resync
    missed = send(cluster.b, room, "missed", mention=None)["message"]
    headers = {"last-event-id": event_id}
    with httpx.stream(
        "GET", f"{cluster.a.url}/api/events", params=params, headers=headers, timeout=20
    ) as stream:
        frames = sse_frames(stream.iter_lines())
        assert next(frames)[0] == "hello"
        data, _ = next_message(frames, missed["id"])
    # b numbers its own events: an id of a's means nothing there, so b says resync
    with httpx.stream(
        "GET", f"{cluster.b.url}/api/events", params=params, headers=headers, timeout=20
    ) as stream:
        frames = sse_frames(stream.iter_lines())
        assert [next(frames)[0], next(frames)[0]] == ["hello", "resync"]


def test_daemons_on_both_replicas_never_double_claim(cluster: Cluster, tmp_path: Path) -> None:
    computer_id, api_key = provision(cluster.a, "shared box")
    body = {"agent_key": "worker", "display_name": "Worker", "runtime": "codex"}
    api(cluster.a, "POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
    args = ("--dry-run", "--interval", SLOW_HEARTBEAT_MS)
    on_a = start_daemon(cluster.a, *args, api_key=api_key, home=tmp_path / "on-a")
    on_b = start_daemon(cluster.b, *args, api_key=api_key, home=tmp_path / "on-b")
    try:
        room = cluster.room()
        total = 200
        servers = itertools.cycle((cluster.a, cluster.b))
        ids = [
            send(next(servers), room, f"job {i}", mention="worker")["deliveries"][0]["id"]
            for i in range(total)
        ]

        def deliveries() -> list[dict[str, Any]]:
            params = {"agent": "worker", "limit": 1000}
            found: list[dict[str, Any]] = api(cluster.b, "GET", "/api/deliveries", params=params)[
                "deliveries"
            ]
            return found

        wait_until(lambda: all(d["status"] == "acked" for d in deliveries()), timeout=90)
        runs = api(cluster.a, "GET", "/api/runs", params={"agent": "worker", "limit": 1000})["runs"]
        assert Counter(r["delivery_id"] for r in runs) == Counter(ids)  # one run each
        assert {d["attempt"] for d in deliveries()} == {1}  # each claimed once, never twice
        assert {r["status"] for r in runs} == {"completed"}
        # both daemons won claims: each raced the other for every delivery
        daemons = {on_a.wait_connected()["daemon"]["daemon_id"]: "a"}
        daemons[on_b.wait_connected()["daemon"]["daemon_id"]] = "b"
        assert sorted(Counter(daemons[r["daemon_id"]] for r in runs)) == ["a", "b"]
    finally:
        on_a.terminate()
        on_b.terminate()
