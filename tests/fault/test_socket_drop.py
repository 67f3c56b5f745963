"""The daemon's connection to the server dropped and restored, through a TCP proxy the test
cuts: its WebSocket alone, then the whole network, then both in turn while messages keep
coming. No delivery is missed or run twice. The daemon's heartbeat is set to 60 s, so what
was posted during a cut is found by the drain the daemon does on every reconnect
(docs/daemon.md), not by a lucky poll."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import provision
from tests.fault.proxy import Cut, TcpProxy

pytestmark = pytest.mark.e2e

# Far longer than the test waits for anything after a cut: only the socket can wake the daemon.
INTERVAL_MS = 60_000
WITHIN = 20.0  # seconds to pick up what was posted during a cut, once the link is back


def test_no_delivery_is_missed_when_the_daemons_connection_drops_and_comes_back(
    server: ServerProcess, make_daemon: Any, request: pytest.FixtureRequest
) -> None:
    proxy = TcpProxy(int(server.url.rsplit(":", 1)[1])).start()
    request.addfinalizer(proxy.close)
    http = httpx.Client(base_url=server.url, timeout=10)
    request.addfinalizer(http.close)
    computer_id, api_key = provision(server)
    body = {"agent_key": "codex", "runtime": "codex", "computer_id": computer_id}
    http.post("/api/agents/onboard", json=body).raise_for_status()
    through_proxy = dataclasses.replace(server, url=proxy.url)
    daemon = make_daemon(
        through_proxy, "--dry-run", "--interval", str(INTERVAL_MS), api_key=api_key
    )
    request.addfinalizer(daemon.terminate)  # while the proxy still lets it say goodbye
    wait_until(lambda: proxy.accepted["socket"], timeout=10)

    posted: list[int] = []
    catch_up: list[float] = []

    def post(count: int) -> None:
        for _ in range(count):
            message = {"room": "general", "sender": "alice", "mentions": ["codex"]}
            answer = http.post("/api/messages", json={**message, "content": f"job {len(posted)}"})
            answer.raise_for_status()
            posted.extend(d["id"] for d in answer.json()["deliveries"])

    def all_acked() -> bool:
        found = http.get("/api/deliveries", params={"agent": "codex", "limit": 1000}).json()
        statuses = {d["id"]: d["status"] for d in found["deliveries"]}
        return sorted(statuses) == sorted(posted) and set(statuses.values()) == {"acked"}

    def drop_and_restore(what: Cut, during: int) -> None:
        """Cut, post ``during`` messages, wait until the daemon has tried to reconnect and
        been turned away, restore, and wait until everything is acked."""
        tried = proxy.refused["socket"]
        proxy.cut(what)
        post(during)
        wait_until(lambda: proxy.refused["socket"] > tried, timeout=WITHIN)
        proxy.restore()
        restored_at = time.monotonic()
        wait_until(all_acked, timeout=WITHIN, interval=0.05)
        catch_up.append(time.monotonic() - restored_at)

    post(10)
    wait_until(all_acked, timeout=WITHIN, interval=0.05)  # woken over the socket
    drop_and_restore("socket", during=10)  # the socket alone; HTTP still gets through
    drop_and_restore("all", during=10)  # the network: every connection reset and refused
    for what in ("socket", "all", "socket", "all"):
        post(5)  # in flight while the link drops
        drop_and_restore(what, during=5)

    def runs() -> list[dict[str, Any]]:
        found = http.get("/api/runs", params={"agent": "codex", "limit": 1000}).json()["runs"]
        return found if {r["status"] for r in found} == {"completed"} else []

    # A dry run is acked as it starts and completed just after: wait for the last ones.
    done = wait_until(runs, timeout=WITHIN)
    assert Counter(r["delivery_id"] for r in done) == Counter(posted), "one run per delivery"
    print(
        f"\n[fault] daemon link dropped {len(catch_up)} times (socket alone and the whole "
        f"network, {proxy.refused.total()} connections refused meanwhile): {len(posted)} "
        f"deliveries, {len(posted)} acked with one run each, 0 missed; caught up "
        f"{max(catch_up):.1f} s at worst after each restore (heartbeat every "
        f"{INTERVAL_MS // 1000} s)"
    )
