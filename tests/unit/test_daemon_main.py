"""The daemon's claim loop against a scripted fake server (``httpx.MockTransport``):
``--once`` exit statuses, 409s skipped quietly, refusals fatal, claims released on stop,
no delivery processed twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from pal.daemon.main import Daemon, Options
from pal.daemon.server_api import ServerApi

COMPUTER = "machine_0123456789abcdef"


class FakeServer:
    """The daemon protocol in memory. ``pending`` maps agent → delivery ids; ``calls``
    records ``(method, path, body)``; ``taken`` ids are listed as pending but answer 409
    to a claim (another daemon was faster)."""

    def __init__(self, agents: dict[str, str] | None = None) -> None:
        self.agents = agents if agents is not None else {"codex": "codex"}
        self.pending: dict[str, list[int]] = {}
        self.taken: set[int] = set()
        self.calls: list[tuple[str, str, Any]] = []
        self.refuse = False
        self.session_gate: asyncio.Event | None = None
        self.session_reached = asyncio.Event()
        self.claims: dict[int, int] = {}
        self.runs = 0

    def paths(self, prefix: str = "") -> list[str]:
        return [f"{m} {p}" for m, p, _ in self.calls if p.startswith(prefix)]

    def _agents(self) -> list[dict[str, Any]]:
        return [{"key": k, "runtime": r, "display_name": k} for k, r in self.agents.items()]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.calls.append((request.method, path, body))
        if self.refuse:
            return httpx.Response(401, json={"error": "the computer API key is not valid"})
        if path == "/api/computers/connect":
            return httpx.Response(
                200,
                json={
                    "computer": {"id": COMPUTER},
                    "daemon_id": body["daemon_id"],
                    "agents": self._agents(),
                    "heartbeat_grace": 60,
                    "lease_seconds": 60,
                },
            )
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json={"agents": self._agents(), "control_requests": []})
        if path == "/api/deliveries":
            agent = request.url.params["agent"]
            after = int(request.url.params.get("after", 0))
            ids = [i for i in self.pending.get(agent, []) if i > after]
            items = [{"id": i, "agent_key": agent, "status": "pending"} for i in ids]
            return httpx.Response(200, json={"deliveries": items})
        if path.endswith("/claim"):
            delivery_id = int(path.split("/")[3])
            for ids in self.pending.values():
                if delivery_id in ids:
                    ids.remove(delivery_id)
            if delivery_id in self.taken:
                return httpx.Response(409, json={"error": "already claimed by another daemon"})
            self.taken.add(delivery_id)
            self.claims[delivery_id] = self.claims.get(delivery_id, 0) + 1
            delivery = {
                "id": delivery_id,
                "agent_key": "codex",
                "room_id": "room_1",
                "topic_id": None,
                "attempt": 1,
                "status": "claimed",
            }
            return httpx.Response(200, json={"delivery": delivery})
        if path == "/api/sessions":
            self.session_reached.set()
            if self.session_gate is not None:
                await self.session_gate.wait()
            return httpx.Response(201, json={"session": {"id": 7, **body}})
        if path == "/api/runs":
            self.runs += 1
            return httpx.Response(201, json={"run": {"id": self.runs}, "delivery": {}})
        if path.startswith("/api/runs/") and path.endswith("/finish"):
            return httpx.Response(200, json={"run": {"id": 1, **body}})
        if path.endswith("/fail"):
            return httpx.Response(200, json={"delivery": {"status": "failed"}})
        return httpx.Response(404, json={"error": f"no route {path}"})


def make_daemon(fake: FakeServer, **options: Any) -> Daemon:
    opts = Options(
        server_url="http://server.test",
        api_key="sk_machine_test",
        interval=60.0,
        local_port=0,
        **options,
    )
    api = ServerApi(opts.server_url, opts.api_key, transport=httpx.MockTransport(fake))
    return Daemon(opts, "token", api=api, install_signal_handlers=False, max_inflight=2)


async def test_once_dry_run_records_one_completed_run_per_pending_delivery() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [1, 2, 3]
    daemon = make_daemon(fake, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 0
    assert fake.claims == {1: 1, 2: 1, 3: 1}
    starts = [body for m, p, body in fake.calls if p == "/api/runs"]
    assert sorted(b["delivery_id"] for b in starts) == [1, 2, 3]
    assert all(
        (b["attempt"], b["daemon_id"], b["session_id"], b["runtime"], b["dry_run"])
        == (1, daemon.daemon_id, 7, "codex", True)
        for b in starts
    )
    finishes = [body for m, p, body in fake.calls if p.endswith("/finish")]
    assert finishes == [{"status": "completed", "exit_code": 0}] * 3
    [session] = {json.dumps(b, sort_keys=True) for m, p, b in fake.calls if p == "/api/sessions"}
    assert json.loads(session) == {
        "agent": "codex",
        "room": "room_1",
        "topic_id": None,
        "runtime": "codex",
    }


async def test_once_with_nothing_pending_exits_0_without_claiming() -> None:
    fake = FakeServer()
    daemon = make_daemon(fake, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 0
    assert fake.paths("/api/deliveries/") == []


async def test_a_claim_answered_409_is_skipped_quietly() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [1, 2]
    fake.taken.add(1)  # another daemon has it
    daemon = make_daemon(fake, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 0
    assert fake.claims == {2: 1}
    assert [b["delivery_id"] for m, p, b in fake.calls if p == "/api/runs"] == [2]
    assert fake.paths("/api/deliveries/1/") == ["POST /api/deliveries/1/claim"]


async def test_without_dry_run_the_delivery_fails_for_good_and_once_exits_1() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [4]
    daemon = make_daemon(fake, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    [fail] = [b for m, p, b in fake.calls if p == "/api/deliveries/4/fail"]
    assert fail["retry"] is False and fail["attempt"] == 1
    assert "cannot execute runtime 'codex' yet; start it with --dry-run" in fail["error"]
    assert fake.paths("/api/runs") == []


async def test_a_delivery_listed_twice_is_processed_once() -> None:
    fake = FakeServer(agents={"codex": "codex", "other": "codex"})
    fake.pending["codex"] = [5]
    fake.pending["other"] = [5]
    daemon = make_daemon(fake, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 0
    assert fake.paths("/api/deliveries/5/") == ["POST /api/deliveries/5/claim"]
    assert fake.runs == 1


async def test_a_refused_key_is_fatal_at_once() -> None:
    fake = FakeServer()
    fake.refuse = True
    daemon = make_daemon(fake, dry_run=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    assert daemon.fatal == (
        "the server refused this computer's API key (revoked or rotated?): "
        "the computer API key is not valid"
    )
    assert fake.paths() == ["POST /api/computers/connect"]  # no retry storm


async def test_stopping_releases_a_claim_whose_run_has_not_started() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [1, 2, 3]
    fake.session_gate = asyncio.Event()
    daemon = make_daemon(fake, dry_run=True, once=True)
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(fake.session_reached.wait(), 10)
    daemon.stop()
    fake.session_gate.set()
    assert await asyncio.wait_for(running, 10) == 0
    released = [(p, b["retry"]) for m, p, b in fake.calls if p.endswith("/fail")]
    assert released and all(retry is True for _, retry in released)
    assert fake.paths("/api/runs") == []
    assert len(fake.claims) == len(released) <= 2  # max_inflight: the third was never claimed


async def test_a_removed_agent_gets_no_new_claims() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [1]
    daemon = make_daemon(fake, dry_run=True, once=True)
    fake.agents.clear()  # unassigned before the daemon connects
    assert await asyncio.wait_for(daemon.run(), 10) == 0
    assert fake.paths("/api/deliveries") == []
    assert daemon.agents == {}


@pytest.mark.parametrize(
    ("server_url", "expected"),
    [
        ("http://127.0.0.1:4127", "ws://127.0.0.1:4127/api/daemon/ws?daemon_id=daemon_1"),
        ("https://pal.example", "wss://pal.example/api/daemon/ws?daemon_id=daemon_1"),
    ],
)
def test_socket_url_follows_the_server_scheme(server_url: str, expected: str) -> None:
    from pal.daemon.main import ws_url

    assert ws_url(server_url, "daemon_1") == expected
