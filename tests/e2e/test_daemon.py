"""``pal daemon`` as a user runs it: real daemon processes against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import DaemonProcess, provision

pytestmark = pytest.mark.e2e

MakeDaemon = Callable[..., DaemonProcess]
FAST = ("--dry-run", "--interval", "200")


_clients: dict[str, httpx.Client] = {}


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.popitem()[1].close()


def api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    """A request to the server (one keep-alive client per server)."""
    client = _clients.get(server.url) or _clients.setdefault(
        server.url, httpx.Client(base_url=server.url, timeout=10)
    )
    response = client.request(method, path, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def assign(server: ServerProcess, key: str, computer_id: str, runtime: str = "codex") -> None:
    body = {"agent_key": key, "display_name": key, "runtime": runtime, "computer_id": computer_id}
    api(server, "POST", "/api/agents/onboard", json=body)


def send(server: ServerProcess, content: str, *, mention: str = "codex") -> int:
    body = api(
        server,
        "POST",
        "/api/messages",
        json={"room": "general", "sender": "alice", "mentions": [mention], "content": content},
    )
    [delivery] = body["deliveries"]
    return int(delivery["id"])


def deliveries(server: ServerProcess, agent: str = "codex") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(
        server, "GET", "/api/deliveries", params={"agent": agent, "limit": 1000}
    )["deliveries"]
    return found


def runs(server: ServerProcess, agent: str = "codex") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(
        server, "GET", "/api/runs", params={"agent": agent, "limit": 1000}
    )["runs"]
    return found


def all_acked(server: ServerProcess, count: int) -> bool:
    items = deliveries(server)
    return len(items) == count and all(d["status"] == "acked" for d in items)


def exactly_one_run_each(server: ServerProcess, ids: list[int]) -> None:
    per_delivery = Counter(r["delivery_id"] for r in runs(server))
    assert per_delivery == Counter(ids), "every delivery has exactly one run"


def test_daemon_quick_start_serves_an_agent_assigned_while_it_runs(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    # 3. Provision a computer (the README's curl).
    computer_id, api_key = provision(server)
    # Start the daemon with the returned key: no agents yet, it stays up and heartbeats.
    daemon = make_daemon(server, *FAST, api_key=api_key)
    health = daemon.health()
    assert health is not None and health["daemon"]["agents"] == []
    assert health["daemon"]["computer_id"] == computer_id
    computer = api(server, "GET", f"/api/computers/{computer_id}")["computer"]
    assert computer["status"] == "online"
    seen = computer["last_seen_at"]
    wait_until(
        lambda: (
            api(server, "GET", f"/api/computers/{computer_id}")["computer"]["last_seen_at"] != seen
        )
    )

    # 4. Create and assign an agent while the daemon runs.
    onboarded = server.pal(
        "console", "agents", "onboard", "--key", "codex", "--name", "Codex Agent",
        "--runtime", "codex", "--computer-id", computer_id,
    )  # fmt: skip
    ok(onboarded)
    wait_until(lambda: (daemon.health() or {}).get("daemon", {}).get("agents") == ["codex"])

    # 5. Send a message: the daemon claims it and records a completed dry run.
    sent = server.pal(
        "console", "send", "--chat", "general", "--from", "alice", "--mention", "codex", "hello"
    )
    ok(sent)
    [run] = wait_until(lambda: [r for r in runs(server) if r["status"] == "completed"])
    assert (run["agent_key"], run["dry_run"], run["exit_code"]) == ("codex", True, 0)
    assert run["computer_id"] == computer_id
    assert run["daemon_id"] == health["daemon"]["daemon_id"]
    [delivery] = deliveries(server)
    assert (delivery["id"], delivery["status"]) == (run["delivery_id"], "acked")
    [session] = api(server, "GET", "/api/sessions", params={"agent": "codex"})["sessions"]
    assert session["id"] == run["session_id"]
    assert daemon.proc.poll() is None, "served without a restart"


def test_daemon_claims_what_was_sent_while_it_was_stopped_and_once_exits(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    computer_id, api_key = provision(server)
    assign(server, "codex", computer_id)
    ids = [send(server, f"job {i}") for i in range(5)]

    once = make_daemon(server, "--dry-run", "--once", api_key=api_key, wait=False)
    assert once.wait() == 0, once.output()
    assert all_acked(server, 5)
    exactly_one_run_each(server, ids)
    assert {r["status"] for r in runs(server)} == {"completed"}

    # Nothing pending: --once exits 0 at once.
    idle = make_daemon(server, "--dry-run", "--once", api_key=api_key, wait=False)
    assert idle.wait() == 0, idle.output()

    # Sent while no daemon runs: a long-running daemon claims it when it starts.
    later = send(server, "while stopped")
    make_daemon(server, *FAST, api_key=api_key)
    wait_until(lambda: all_acked(server, 6))
    exactly_one_run_each(server, [*ids, later])


def test_daemon_once_without_the_runtime_fails_the_delivery_and_exits_1(
    server: ServerProcess, make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    computer_id, api_key = provision(server)
    assign(server, "codex", computer_id)
    delivery_id = send(server, "please run")

    no_codex = {"PATH": f"{tmp_path}{os.pathsep}{os.path.dirname(sys.executable)}"}
    once = make_daemon(server, "--once", api_key=api_key, wait=False, extra_env=no_codex)
    assert once.wait() == 1, once.output()
    [delivery] = deliveries(server)
    assert (delivery["id"], delivery["status"]) == (delivery_id, "failed")
    assert "codex is not installed on this computer" in delivery["error"]
    assert "npm install -g @openai/codex" in delivery["error"]
    assert runs(server) == []


def test_daemon_exits_with_a_plain_message_when_its_key_is_refused(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    computer_id, api_key = provision(server)
    wrong = make_daemon(server, *FAST, api_key="sk_machine_not-a-real-key", wait=False)
    assert wrong.wait() == 1
    error_lines = [line for line in wrong.output().splitlines() if line.startswith("error: ")]
    assert error_lines == [
        "error: the server refused this computer's API key (revoked or rotated?): "
        + error_lines[0].split("(revoked or rotated?): ", 1)[1]
    ]
    assert "sk_machine_not-a-real-key" not in wrong.output()

    daemon = make_daemon(server, *FAST, api_key=api_key)
    api(server, "POST", f"/api/computers/{computer_id}/revoke")
    assert daemon.wait(timeout=15) == 1
    output = daemon.output()
    assert "error: the server refused this computer's API key (revoked or rotated?)" in output
    assert output.count("error: ") == 1, output
    assert api_key not in output


def test_daemon_waits_for_the_server_and_drains_after_it_comes_back(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    computer_id, api_key = provision(server)
    assign(server, "codex", computer_id)
    first = send(server, "before the outage")
    server.stop()

    # Unreachable at start: the daemon keeps trying and serves the local API meanwhile.
    daemon = make_daemon(server, *FAST, api_key=api_key, wait=False)
    wait_until(lambda: "server unreachable (1 attempt)" in daemon.output())
    health = wait_until(daemon.health)
    assert health["daemon"]["computer_id"] is None and isinstance(health["server"], str)
    server.restart()
    daemon.wait_connected()
    wait_until(lambda: all_acked(server, 1))

    # Down while running, then back: what is posted afterwards is drained too.
    server.stop()
    wait_until(lambda: daemon.output().count("server unreachable (1 attempt)") == 2)
    assert daemon.proc.poll() is None
    server.restart()
    second = send(server, "after the outage")
    wait_until(lambda: all_acked(server, 2))
    exactly_one_run_each(server, [first, second])
    # One line per retry window, not one per attempt.
    assert daemon.output().count("server unreachable") <= 4, daemon.output()


def test_daemon_sigterm_exits_promptly_and_local_api_needs_the_token(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    computer_id, api_key = provision(server)
    daemon = make_daemon(server, "--dry-run", api_key=api_key)  # default 5 s interval
    url = daemon.local_url

    assert httpx.get(f"{url}/health").status_code == 401
    wrong = httpx.get(f"{url}/api/rooms", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "error" in wrong.json()
    token_file = daemon.home / "daemon.token"
    assert token_file.stat().st_mode & 0o777 == 0o600

    health = daemon.local("GET", "/health").json()
    assert health["ok"] is True
    assert health["daemon"]["computer_id"] == computer_id
    assert health["daemon"]["socket"] in ("connected", "disconnected")
    assert (health["daemon"]["server_url"], health["daemon"]["dry_run"]) == (server.url, True)
    assert health["server"]["ok"] is True
    rooms = daemon.local("GET", "/api/rooms")
    assert rooms.status_code == 200 and "general" in rooms.text
    missing = daemon.local("GET", "/api/rooms/nope")
    assert missing.status_code == 404 and "error" in missing.json()

    # The same local port again: one clear error line, exit 1.
    clash = subprocess.run(
        [sys.executable, "-m", "pal", "daemon", "--server", server.url, "--api-key", api_key,
         "--local-port", str(daemon.local_port)],
        env=daemon.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert clash.returncode == 1
    assert clash.stderr.startswith("error: cannot serve the local API on 127.0.0.1:")
    assert clash.stderr.count("\n") == 1, clash.stderr

    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0, daemon.output()
    assert time.monotonic() - started < 5
    assert "stopped" in daemon.output()


def test_daemon_killed_mid_claiming_loses_nothing(
    backend_env: dict[str, str], make_server: Callable[..., ServerProcess], make_daemon: MakeDaemon
) -> None:
    server = make_server({**backend_env, "PAL_HEARTBEAT_GRACE": "2"})
    computer_id, api_key = provision(server)
    assign(server, "codex", computer_id)
    total = 150
    ids = [send(server, f"job {i}") for i in range(total)]

    first = make_daemon(server, *FAST, api_key=api_key, wait=False)
    wait_until(lambda: api(server, "GET", "/api/runs", params={"limit": 1})["runs"], timeout=20)
    first.kill()
    # What the dead daemon held at that moment (it may have started runs for all it claimed)
    held = {d["id"] for d in deliveries(server) if d["status"] == "claimed"}

    second = make_daemon(server, *FAST, api_key=api_key)
    wait_until(lambda: all_acked(server, total), timeout=60)
    exactly_one_run_each(server, ids)
    # A run the killed daemon had started but not finished does not stay "running" forever.
    wait_until(lambda: all(r["status"] != "running" for r in runs(server)), timeout=20)
    assert {r["status"] for r in runs(server)} <= {"completed", "lost"}
    # What the killed daemon held came back when its lease ran out and was claimed again, or
    # was acked by a report it sent just before it died (its run then ended up lost).
    run_of = {r["delivery_id"]: r for r in runs(server)}
    for d in deliveries(server):
        if d["id"] in held:
            assert d["attempt"] == 2 or run_of[d["id"]]["status"] == "lost", (d, run_of[d["id"]])
    assert second.proc.poll() is None


def test_two_daemons_serving_one_agent_never_double_claim(
    backend_env: dict[str, str], make_server: Callable[..., ServerProcess], make_daemon: MakeDaemon
) -> None:
    server = make_server(backend_env)
    computer_id, api_key = provision(server)
    assign(server, "codex", computer_id)
    first = make_daemon(server, *FAST, api_key=api_key)
    second = make_daemon(server, *FAST, api_key=api_key)
    total = 200
    ids = [send(server, f"job {i}") for i in range(total)]

    wait_until(lambda: all_acked(server, total), timeout=60)
    exactly_one_run_each(server, ids)
    assert {r["status"] for r in runs(server)} == {"completed"}
    assert {r["daemon_id"] for r in runs(server)} <= {
        first.wait_connected()["daemon"]["daemon_id"],
        second.wait_connected()["daemon"]["daemon_id"],
    }


def test_legacy_daemon_registers_its_computer_and_serves_its_agent(
    server: ServerProcess, make_daemon: MakeDaemon
) -> None:
    legacy = ("--agent", "codex", "--computer-id", "hm-media-demo", "--dry-run", "--once")
    secret = {"PAL_COMPUTER_SECRET": "pal-demo-computer-secret"}
    first = make_daemon(server, *legacy, extra_env=secret, wait=False)
    assert first.wait() == 0, first.output()  # registered; codex made and assigned
    agent = api(server, "GET", "/api/agents/codex")["agent"]
    assert agent["computer_id"] == "hm-media-demo"

    delivery_id = send(server, "hello legacy")
    second = make_daemon(server, *legacy, extra_env=secret, wait=False)
    assert second.wait() == 0, second.output()
    [run] = runs(server)
    assert (run["delivery_id"], run["computer_id"], run["status"]) == (
        delivery_id,
        "hm-media-demo",
        "completed",
    )

    wrong = make_daemon(server, *legacy, extra_env={"PAL_COMPUTER_SECRET": "guess"}, wait=False)
    assert wrong.wait() == 1
    assert "error: the server refused the legacy computer id and secret: " in wrong.output()
    assert "guess" not in wrong.output()
