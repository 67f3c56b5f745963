"""Debates end to end: a real server, a real daemon and two agents (the ``command`` runtime
running a small script that answers with the real ``pal cli send``). A debate started with
``pal cli debate start`` takes exactly its turns, alternating, in the topic's thread, then
stops; and it carries on across a server restart in the middle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pal.client import ServerClient
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import DaemonProcess, provision

pytestmark = pytest.mark.e2e

# A debater: answers in the run's thread with `pal cli send`. While the server is away (it
# is restarted in one test) the daemon's local API answers 503, and the script tries again,
# as an agent would.
DEBATER = """\
import subprocess, sys, time
agent, run_id = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while True:
    done = subprocess.run(
        [sys.executable, "-m", "pal", "cli", "send", f"{agent} argues (run {run_id})"],
        capture_output=True, text=True,
    )
    if done.returncode == 0:
        break
    if time.monotonic() > deadline:
        sys.exit(done.stderr)
    time.sleep(0.2)
"""


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pal cli ARGS`` through ``daemon`` with its token (not in a run)."""
    env = {**daemon.server.env, "PAL_HOME": str(daemon.home), "LOCK_DAEMON_URL": daemon.local_url}
    return subprocess.run(
        [sys.executable, "-m", "pal", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], backend_env: dict[str, str]) -> ServerProcess:
    started: ServerProcess = make_server(backend_env)
    return started


@pytest.fixture
def daemon(
    server: ServerProcess, make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> DaemonProcess:
    """A real daemon with agents ``pro`` and ``con``, each running the debater script."""
    _computer_id, key = provision(server)
    started: DaemonProcess = make_daemon(server, api_key=key)
    computer_id = started.wait_connected()["daemon"]["computer_id"]
    script = tmp_path / "debater.py"
    script.write_text(DEBATER)
    with ServerClient(server.url) as client:
        for agent in ("pro", "con"):
            argv = [sys.executable, str(script), agent, "{run_id}"]
            client.create_agent(
                agent, display_name=agent, runtime="command", config={"command": argv}
            )
            client.assign_agent(agent, computer_id)

    def serving() -> bool:
        health = started.health()
        return health is not None and {"pro", "con"} <= set(health["daemon"]["agents"])

    wait_until(serving, timeout=20)
    return started


def get_debate(server: ServerProcess, debate_id: int) -> dict[str, Any]:
    with ServerClient(server.url) as client:
        return dict(client.get_debate(debate_id)["debate"])


def wait_debate(
    server: ServerProcess, daemon: DaemonProcess, debate_id: int, done: Callable[[Any], bool]
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = get_debate(server, debate_id)
        return found if done(found) else None

    try:
        found: dict[str, Any] = wait_until(check, timeout=60, interval=0.05)
    except AssertionError:
        raise AssertionError(
            f"debate {get_debate(server, debate_id)}\n--- daemon log:\n{daemon.output()}"
        ) from None
    return found


def runs_finished(server: ServerProcess, room: str, count: int) -> list[dict[str, Any]]:
    def finished() -> list[dict[str, Any]] | None:
        with ServerClient(server.url) as client:
            runs = [dict(r) for r in client.list_runs(room=room, limit=100)["runs"]]
        done = len(runs) >= count and all(r["status"] != "running" for r in runs)
        return runs if done else None

    found: list[dict[str, Any]] = wait_until(finished, timeout=30, interval=0.05)
    return found


def assert_debated(server: ServerProcess, room: str, debate: dict[str, Any]) -> None:
    """Exactly ``turns`` replies, alternating a, b, a, ..., the notice, and nothing after."""
    runs = runs_finished(server, room, debate["turns"])
    assert [r["status"] for r in runs] == ["completed"] * debate["turns"], runs
    with ServerClient(server.url) as client:
        thread = client.list_messages(room, parent=debate["root_message_id"], limit=100)
        active = [
            d
            for status in ("pending", "claimed")
            for d in client.list_deliveries(status=status, limit=1000)["deliveries"]
        ]
    replies = [m for m in thread["messages"] if m["sender_kind"] == "agent"]
    speakers = [debate["a"], debate["b"]] * (debate["turns"] // 2)
    assert [m["sender"] for m in replies] == speakers
    notices = [m["content"] for m in thread["messages"] if m["sender_kind"] == "system"]
    assert notices == [f"Debate finished after {debate['turns']} turns."]
    assert active == []  # no turn left to take: nobody will be woken again


def test_a_six_turn_debate_alternates_and_stops(
    server: ServerProcess, daemon: DaemonProcess
) -> None:
    with ServerClient(server.url) as client:
        client.create_room("arena")
    started = cli(daemon, "debate", "start", "--chat", "arena", "--a", "pro", "--b", "con",
                  "--turns", "6", "Is a monorepo better?")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "started in arena: pro opens, con answers, 6 turns" in started.stdout
    debate_id = int(started.stdout.split()[1])

    ended = wait_debate(server, daemon, debate_id, lambda d: d["status"] == "completed")
    assert (ended["turn"], ended["next_speaker"]) == (6, None)
    assert_debated(server, "arena", ended)

    shown = cli(daemon, "debate", "show", str(debate_id))
    assert shown.returncode == 0, shown.stderr
    assert f"debate {debate_id} in arena: pro and con, completed, 6 of 6 turns" in shown.stdout
    assert "Debate finished after 6 turns." in shown.stdout
    listed = cli(daemon, "debate", "list", "--room", "arena", "--json")
    assert listed.returncode == 0 and f'"id": {debate_id}' in listed.stdout


def test_a_debate_carries_on_across_a_server_restart(
    server: ServerProcess, daemon: DaemonProcess
) -> None:
    with ServerClient(server.url) as client:
        client.create_room("arena")
        started = client.start_debate("arena", "pro", "con", "Tabs or spaces?", turns=6)
    debate_id = started["debate"]["id"]

    wait_debate(server, daemon, debate_id, lambda d: d["turn"] >= 2)
    server.stop()
    server.restart()
    midway = get_debate(server, debate_id)
    assert midway["status"] == "running" and 2 <= midway["turn"] < 6  # restarted midway

    ended = wait_debate(server, daemon, debate_id, lambda d: d["status"] == "completed")
    assert ended["turn"] == 6
    assert_debated(server, "arena", ended)
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
