"""The daemon's claim loop against a scripted fake server (``httpx.MockTransport``):
``--once`` exit statuses, 409s skipped quietly, refusals fatal, claims released on stop,
no delivery processed twice."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pal.daemon import local_api
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
        self.connected = asyncio.Event()

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
            self.connected.set()
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


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def make_daemon(fake: FakeServer | Handler, **options: Any) -> Daemon:
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


async def test_a_missing_runtime_fails_the_delivery_for_good_and_once_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no codex here
    fake = FakeServer()
    fake.pending["codex"] = [4]
    daemon = make_daemon(fake, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    [fail] = [b for m, p, b in fake.calls if p == "/api/deliveries/4/fail"]
    assert fail["retry"] is False and fail["attempt"] == 1
    assert "agent 'codex' cannot run on this computer: codex is not installed" in fail["error"]
    assert fake.paths("/api/runs") == []
    # the daemon told the server what it can run
    [connect] = [b for m, p, b in fake.calls if p == "/api/computers/connect"]
    runtimes = {r["name"]: r["available"] for r in connect["runtimes"]}
    assert runtimes == dict.fromkeys(("codex", "claude", "command", "neeko", "coco"), False) | {
        "command": True
    }


async def test_an_unexpected_error_after_a_claim_fails_the_delivery_instead_of_holding_it() -> None:
    fake = FakeServer()
    fake.pending["codex"] = [5]

    async def malformed_session(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/sessions":
            fake.calls.append((request.method, request.url.path, None))
            return httpx.Response(201, json={"session": {}})  # no id: a KeyError later
        return await fake(request)

    daemon = make_daemon(malformed_session, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    [fail] = [b for m, p, b in fake.calls if p == "/api/deliveries/5/fail"]
    assert fail["retry"] is False and "unexpected error" in fail["error"]
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


async def test_a_refusal_while_once_drains_is_fatal_not_a_crash() -> None:
    fake = FakeServer()
    original = fake.__call__

    async def revoked_after_connect(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/deliveries":  # the key was rotated after connect
            return httpx.Response(401, json={"error": "the computer API key is not valid"})
        return await original(request)

    daemon = make_daemon(revoked_after_connect, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    assert daemon.fatal is not None and "the computer API key is not valid" in daemon.fatal


async def test_stopping_while_connect_hangs_exits_at_once() -> None:
    hung = asyncio.Event()

    async def never_answers(request: httpx.Request) -> httpx.Response:
        hung.set()
        await asyncio.Event().wait()  # a server that accepted the connection, then froze
        raise AssertionError("unreachable")

    daemon = make_daemon(never_answers)
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(hung.wait(), 10)
    daemon.stop()
    assert await asyncio.wait_for(running, 5) == 0


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_server_error_at_connect_is_retried_not_fatal(status: int) -> None:
    fake = FakeServer()
    fake.pending["codex"] = [1]
    original = fake.__call__
    failures = [status, status]

    async def flaky_connect(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/computers/connect" and failures:
            return httpx.Response(failures.pop(), json={"error": "database is restarting"})
        return await original(request)

    daemon = make_daemon(flaky_connect, dry_run=True, once=True)
    assert await asyncio.wait_for(daemon.run(), 20) == 0
    assert daemon.fatal is None and fake.claims == {1: 1}


async def test_a_connect_answered_404_is_fatal_and_says_so_without_blaming_the_key() -> None:
    async def not_pal(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "Not Found"})

    daemon = make_daemon(not_pal, dry_run=True)
    assert await asyncio.wait_for(daemon.run(), 10) == 1
    assert daemon.fatal == (
        "the server at http://server.test answered the connect request with HTTP 404: "
        "Not Found (is --server the pal server's URL?)"
    )


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "deliveries", "agent": "codex", "ids": 5}',
        '{"type": "deliveries", "agent": ["codex"], "ids": [1]}',
        '{"type": "deliveries", "agent": "codex", "ids": [true, "2", null]}',
        '["deliveries"]',
        '"resync"',
        '{"type": ["resync"]}',
        "not json",
        b"\xff",
    ],
)
async def test_a_malformed_hint_is_ignored(frame: str | bytes) -> None:
    daemon = make_daemon(FakeServer())
    daemon.agents = {"codex": {"key": "codex"}}
    daemon._on_hint(frame)  # never raises: a raise would end the socket task
    assert daemon._inflight == {}


async def test_stopping_does_not_wait_for_a_forwarded_request_that_hangs() -> None:
    fake = FakeServer()
    forwarded = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/slow":
            forwarded.set()
            await asyncio.Event().wait()  # the server never answers this one
        return await fake(request)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = make_daemon(server)
    daemon.options = dataclasses.replace(daemon.options, local_port=port)
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(fake.connected.wait(), 10)
    async with httpx.AsyncClient(timeout=30) as client:
        pending = asyncio.create_task(
            client.get(
                f"http://127.0.0.1:{port}/api/slow", headers={"authorization": "Bearer token"}
            )
        )
        await asyncio.wait_for(forwarded.wait(), 10)
        daemon.stop()
        done, _ = await asyncio.wait({running}, timeout=local_api.SHUTDOWN_TIMEOUT + 5)
        assert done == {running} and running.result() == 0
        with contextlib.suppress(httpx.HTTPError):
            await pending
