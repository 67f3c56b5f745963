"""Periodic digests end to end: a real server (the room's digest period set through the API),
a real daemon and the fake ``codex`` (which records its prompt and answers with the real
``pal cli send``). A burst of messages becomes exactly one digest run that lists them; with
nothing new, no digest follows; the next message gets the next one."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import DaemonProcess, provision
from tests.fakes import install_fakes

pytestmark = pytest.mark.e2e

PERIOD = 5  # the shortest digest period: the server then sweeps every 2.5 s
SWEEP_LINE = re.compile(r"pal\.server\.digests: digest sweep: \d+ due, (\d+) made")


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], backend_env: dict[str, str]) -> ServerProcess:
    # at debug level the server logs every digest sweep: the test counts them
    started: ServerProcess = make_server({**backend_env, "PAL_LOG_LEVEL": "debug"})
    return started


def sweeps(server: ServerProcess) -> list[int]:
    """How many digests each digest sweep so far made, in order."""
    return [int(m.group(1)) for m in SWEEP_LINE.finditer(server.log.read_text(errors="replace"))]


def api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", timeout=10, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def test_a_burst_of_messages_makes_exactly_one_digest_run(
    server: ServerProcess, make_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    bin_dir = install_fakes(tmp_path / "bin")
    (tmp_path / "codex-home").mkdir()
    records = tmp_path / "records"
    records.mkdir()
    computer_id, key = provision(server)
    daemon = make_daemon(
        server,
        api_key=key,
        extra_env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "CODEX_HOME": str(tmp_path / "codex-home"),
            "FAKE_RECORD_DIR": str(records),
        },
    )
    body = {"agent_key": "codex", "display_name": "Codex", "runtime": "codex"}
    api(server, "POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
    api(server, "POST", "/api/rooms", json={"name": "digests"})
    room = api(server, "PATCH", "/api/rooms/digests", json={"settings": {"digest_period": PERIOD}})[
        "room"
    ]
    assert room["settings"] == {"digest_period": PERIOD}
    before = api(server, "POST", "/api/messages", json=message("before codex joined"))
    api(server, "POST", "/api/rooms/digests/agents", json={"agent": "codex", "mode": "periodic"})

    burst = [api(server, "POST", "/api/messages", json=message(f"update {i}")) for i in range(5)]
    assert all(posted["deliveries"] == [] for posted in burst)  # nothing per message
    [run] = wait_runs(server, daemon, 1)
    assert run["status"] == "completed" and run["message_id"] == burst[-1]["message"]["id"]
    [digest] = digests(server)
    assert digest["digest_after"] == before["message"]["id"]  # no digest of the history
    prompt = recorded_prompt(records, run["id"])
    assert '5 new messages in "digests" since your last digest' in prompt
    for i, posted in enumerate(burst):
        assert f"[{posted['message']['id']}] alice: update {i}" in prompt
    assert "before codex joined" not in prompt
    # the fake answered with `pal cli send`: at the room's top level, as codex
    [reply] = [m for m in messages(server) if m["sender"] == "codex"]
    assert reply["parent_id"] is None and reply["content"] == f"fake codex: done (run {run['id']})"

    # nothing new (its own reply does not count): no digest in the 4 sweeps after it (10 s,
    # so the sweeps after the period's end found the member due, with nothing to send)
    made_at = next(i for i, made in enumerate(sweeps(server)) if made)
    wait_until(lambda: len(sweeps(server)) > made_at + 4, timeout=30)
    assert sum(sweeps(server)) == 1
    assert len(digests(server)) == 1 and len(wait_runs(server, daemon, 1)) == 1

    # something new: the next digest covers just that
    news = api(server, "POST", "/api/messages", json=message("one more thing"))
    [_, second] = wait_runs(server, daemon, 2)
    assert digests(server)[-1]["digest_after"] == burst[-1]["message"]["id"]
    prompt = recorded_prompt(records, second["id"])
    assert '1 new message in "digests"' in prompt
    assert f"[{news['message']['id']}] alice: one more thing" in prompt
    assert "update 4" not in prompt


def message(text: str) -> dict[str, Any]:
    return {"room": "digests", "sender": "alice", "content": text}


def messages(server: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(
        server, "GET", "/api/messages", params={"room": "digests", "limit": 100}
    )["messages"]
    return found


def digests(server: ServerProcess) -> list[dict[str, Any]]:
    found = api(server, "GET", "/api/deliveries", params={"agent": "codex", "limit": 100})
    assert {d["reason"] for d in found["deliveries"]} <= {"digest"}
    return list(found["deliveries"])


def wait_runs(server: ServerProcess, daemon: DaemonProcess, count: int) -> list[dict[str, Any]]:
    """The room's runs once ``count`` of them have finished (and none is running)."""

    def finished() -> list[dict[str, Any]] | None:
        runs = api(server, "GET", "/api/runs", params={"room": "digests", "limit": 100})["runs"]
        done = len(runs) >= count and all(r["status"] != "running" for r in runs)
        return sorted(runs, key=lambda r: r["id"]) if done else None

    try:
        found: list[dict[str, Any]] = wait_until(finished, timeout=30, interval=0.1)
    except AssertionError:
        raise AssertionError(f"--- daemon log:\n{daemon.output()}") from None
    return found


def recorded_prompt(records: Path, run_id: int) -> str:
    [record] = sorted(records.glob(f"{run_id}-*.json"))
    prompt: str = json.loads(record.read_text())["argv"][-1]
    return prompt
