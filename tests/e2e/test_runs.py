"""Runs end to end: a real server, a real daemon (no --dry-run) and the fake ``codex`` on
PATH, which speaks codex's JSONL and answers through the real ``pal cli send``.

One server and one daemon serve the whole module; each test works in its own room (a
session is per agent and room), so the tests do not see each other's runs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, start_server
from tests.e2e.daemon_process import DaemonProcess, provision, start_daemon
from tests.fakes import install_fakes

pytestmark = pytest.mark.e2e

KILL_GRACE = 1.0
_rooms = itertools.count(1)


@dataclass
class Stack:
    server: ServerProcess
    daemon: DaemonProcess
    api_key: str
    codex_home: Path
    records: Path
    http: httpx.Client

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def room(self) -> str:
        name = f"work-{next(_rooms)}"
        self.api("POST", "/api/rooms", json={"name": name})
        return name

    def send(self, room: str, text: str, *, mention: str = "codex") -> dict[str, Any]:
        body = {"room": room, "sender": "alice", "mentions": [mention], "content": text}
        posted: dict[str, Any] = self.api("POST", "/api/messages", json=body)
        return posted

    def messages(self, room: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/api/messages", params={"room": room, "limit": 1000}
        )["messages"]
        return found

    def runs(self, room: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/api/runs", params={"room": room, "limit": 100}
        )["runs"]
        return sorted(found, key=lambda r: r["id"])

    def run(self, run_id: int) -> dict[str, Any]:
        run: dict[str, Any] = self.api("GET", f"/api/runs/{run_id}")["run"]
        return run

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

    def output(self, run_id: int) -> str:
        chunks = self.api("GET", f"/api/runs/{run_id}/output", params={"limit": 5000})["chunks"]
        return "".join(c["data"] for c in chunks if c["stream"] == "stdout")

    def recorded(self, run_id: int) -> list[dict[str, Any]]:
        """What the fake codex recorded of each of its processes for ``run_id``."""
        files = sorted(self.records.glob(f"{run_id}-*.json"))
        return [json.loads(f.read_text()) for f in files]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("runs")
    server = start_server(root / "home")
    bin_dir = install_fakes(root / "bin")
    codex_home = root / "codex-home"
    codex_home.mkdir()
    claude_home = root / "claude-home"
    claude_home.mkdir()
    records = root / "records"
    records.mkdir()
    computer_id, api_key = provision(server)
    daemon = start_daemon(
        server,
        "--interval",
        "300",
        api_key=api_key,
        extra_env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "CODEX_HOME": str(codex_home),
            "CLAUDE_CONFIG_DIR": str(claude_home),
            "FAKE_RECORD_DIR": str(records),
            "PAL_KILL_GRACE": str(KILL_GRACE),
        },
    )
    http = httpx.Client(base_url=server.url, timeout=10)
    stack = Stack(server, daemon, api_key, codex_home, records, http)
    body = {"agent_key": "codex", "display_name": "Codex", "runtime": "codex"}
    stack.api("POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
    body = {"agent_key": "claude", "display_name": "Claude", "runtime": "claude"}
    stack.api("POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
    try:
        yield stack
    finally:
        http.close()
        daemon.terminate()
        server.stop()


def gone(pid: int) -> bool:
    """No such process any more (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_message_becomes_a_run_whose_reply_lands_in_the_thread(stack: Stack) -> None:
    room = stack.room()
    posted = stack.send(room, "please say hello")
    [run] = stack.wait_run(room, "completed")
    assert run["exit_code"] == 0 and run["pid"] and run["error"] is None
    assert run["message_id"] == posted["message"]["id"]
    replies = [m for m in stack.messages(room) if m["sender"] == "codex"]
    assert [m["content"] for m in replies] == [f"fake codex: done (run {run['id']})"]
    assert replies[0]["parent_id"] == posted["message"]["id"]  # in the message's thread
    assert replies[0]["sender_kind"] == "agent"
    # codex's JSONL reached the run's output, and its usage the run
    assert '"type":"thread.started"' in stack.output(run["id"]).replace(" ", "")
    assert run["usage"]["input_tokens"] > 0 and run["usage"]["scope"] == "thread"
    # the session remembers codex's thread and where it ran
    [session] = stack.api("GET", "/api/sessions", params={"room": room})["sessions"]
    assert session["runtime_session_id"]
    assert Path(session["cwd"]) == stack.daemon.home / "agents" / "codex"


def test_what_the_agent_is_told_and_what_it_never_sees(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "first, for context")
    stack.wait_run(room, "completed")
    stack.send(room, "now fix the failing test")
    [_, run] = stack.wait_run(room, "completed", count=2)
    [record] = stack.recorded(run["id"])
    prompt = record["argv"][-1]
    assert "now fix the failing test" in prompt and "alice" in prompt
    assert room in prompt and f"run {run['id']}" in prompt
    assert "first, for context" in prompt  # recent conversation
    assert 'pal cli send "' in prompt
    env = record["env"]
    assert env["PAL_RUN_ID"] == str(run["id"]) and env["PAL_RUN_AUTH"].startswith("run_")
    assert env["LOCK_DAEMON_URL"] == stack.daemon.local_url
    assert not [k for k in env if any(s in k for s in ("KEY", "TOKEN", "SECRET"))]
    assert stack.api_key not in json.dumps(record)
    assert stack.daemon.token not in json.dumps(record)
    assert record["stdin"] == ""  # stdin is /dev/null: read to EOF at once


def test_a_second_message_resumes_the_session(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "one")
    [first] = stack.wait_run(room, "completed")
    stack.send(room, "two")
    [_, second] = stack.wait_run(room, "completed", count=2)
    [session] = stack.api("GET", "/api/sessions", params={"room": room})["sessions"]
    [record] = stack.recorded(second["id"])
    argv = record["argv"]
    assert argv[argv.index("resume") + 1] == session["runtime_session_id"]
    assert argv.index("--json") < argv.index("resume")  # exec flags before `resume`
    assert '"type":"thread.started"' in stack.output(first["id"]).replace(" ", "")
    assert session["runtime_session_id"] in stack.output(second["id"])


def test_a_lost_codex_session_starts_fresh_once_and_says_so(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "one")
    stack.wait_run(room, "completed")
    [before] = stack.api("GET", "/api/sessions", params={"room": room})["sessions"]
    for rollout in (stack.codex_home / "sessions").rglob(f"*{before['runtime_session_id']}*"):
        rollout.unlink()
    stack.send(room, "two")
    [_, second] = stack.wait_run(room, "completed", count=2)
    notices = [m for m in stack.messages(room) if m["sender_kind"] == "system"]
    assert len(notices) == 1 and "could not resume" in notices[0]["content"]
    assert before["runtime_session_id"] in notices[0]["content"]
    assert [("resume" in r["argv"]) for r in stack.recorded(second["id"])] == [True, False]
    [after] = stack.api("GET", "/api/sessions", params={"room": room})["sessions"]
    assert after["runtime_session_id"] != before["runtime_session_id"]
    assert any(
        m["content"] == f"fake codex: done (run {second['id']})" for m in stack.messages(room)
    )


def test_kill_leaves_no_process_behind(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "[fake:grandchild] [fake:ignore_sigterm] [fake:sleep=120] stuck")
    [run] = stack.wait_run(room, "running")
    pid_file = stack.records / f"grandchild-{run['id']}.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=15)
    grandchild = int(pid_file.read_text())
    pid = wait_until(lambda: stack.run(run["id"])["pid"], timeout=10)
    assert not gone(pid) and not gone(grandchild)

    asked = time.monotonic()
    action = stack.api("POST", f"/api/runs/{run['id']}/kill", json={"requested_by": "alice"})
    [killed] = stack.wait_run(room, "killed", timeout=KILL_GRACE + 15)
    wait_until(lambda: gone(pid) and gone(grandchild), timeout=KILL_GRACE + 2)
    assert time.monotonic() - asked < KILL_GRACE + 10
    assert killed["id"] == run["id"] and killed["error"] == "killed on request"
    done = wait_until(
        lambda: [
            a
            for a in stack.api("GET", f"/api/runs/{run['id']}")["actions"]
            if a["id"] == action["action"]["id"] and a["status"] == "done"
        ]
    )
    assert done


def test_restart_gives_a_fresh_run_of_the_same_message(stack: Stack) -> None:
    room = stack.room()
    posted = stack.send(room, "[fake:sleep=120] long job")
    [first] = stack.wait_run(room, "running")
    wait_until(lambda: stack.run(first["id"])["pid"], timeout=10)
    stack.api("POST", f"/api/rooms/{room}/agents/codex/restart", json={})
    [old] = stack.wait_run(room, "killed")
    [new] = stack.wait_run(room, "running")
    assert old["id"] == first["id"] and old["error"] == "killed to restart it"
    assert new["restart_of"] == first["id"]
    assert new["message_id"] == posted["message"]["id"] == old["message_id"]
    assert new["delivery_id"] == old["delivery_id"]
    stack.api("POST", f"/api/runs/{new['id']}/kill", json={})
    stack.wait_run(room, "killed", count=2, timeout=KILL_GRACE + 15)


def test_claude_answers_and_resumes_its_session(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "hello claude", mention="claude")
    [first] = stack.wait_run(room, "completed")
    assert first["runtime"] == "claude" and first["usage"]["scope"] == "run"
    replies = [m["content"] for m in stack.messages(room) if m["sender"] == "claude"]
    assert replies == [f"fake claude: done (run {first['id']})"]
    [session] = stack.api("GET", "/api/sessions", params={"room": room})["sessions"]
    stack.send(room, "again", mention="claude")
    [_, second] = stack.wait_run(room, "completed", count=2)
    [record] = stack.recorded(second["id"])
    argv = record["argv"]
    assert argv[argv.index("--resume") + 1] == session["runtime_session_id"]
    assert "--session-id" not in argv


def test_output_is_visible_while_the_run_is_still_running(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "[fake:sleep=60] thinking")
    [run] = stack.wait_run(room, "running")
    # codex prints thread.started before it works: the server has it within about a second
    wait_until(lambda: "thread.started" in stack.output(run["id"]), timeout=5)
    assert stack.run(run["id"])["status"] == "running"
    stack.api("POST", f"/api/runs/{run['id']}/kill", json={})
    stack.wait_run(room, "killed", timeout=KILL_GRACE + 15)


def test_a_message_too_long_for_a_command_line_still_runs(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "字" * 60_000)  # 180 KB of UTF-8: over Linux's 128 KiB per argument
    [run] = stack.wait_run(room, "completed")
    [record] = stack.recorded(run["id"])
    assert "pal cli messages show" in record["argv"][-1]


def test_a_failing_runtime_fails_the_run_with_its_exit_code(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "[fake:no_reply] [fake:exit=3] broken")
    [run] = stack.wait_run(room, "failed")
    assert run["exit_code"] == 3 and "exit code 3" in run["error"], (
        run,
        stack.daemon.output()[-3000:],
    )


def test_megabytes_of_output_arrive_whole(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "[fake:no_reply] [fake:flood=3000000] [fake:long_line=1500000] loud")
    [run] = stack.wait_run(room, "completed")
    chunks = stack.api("GET", f"/api/runs/{run['id']}/output", params={"limit": 5000})
    stdout = "".join(c["data"] for c in chunks["chunks"] if c["stream"] == "stdout")
    assert len(stdout) >= 4_500_000 and chunks["output_dropped"] == 0


def test_a_missing_runtime_fails_the_delivery_at_once_saying_what_to_install(
    stack: Stack,
) -> None:
    room = stack.room()
    computer = stack.api("GET", "/api/computers")["computers"][0]
    body = {"agent_key": "ghost", "display_name": "Ghost", "runtime": "neeko"}
    stack.api("POST", "/api/agents/onboard", json={**body, "computer_id": computer["id"]})
    stack.send(room, "hello", mention="ghost")

    def failed() -> dict[str, Any] | None:
        found = stack.api("GET", "/api/deliveries", params={"agent": "ghost"})["deliveries"]
        return found[0] if found and found[0]["status"] == "failed" else None

    delivery = wait_until(failed, timeout=15)
    assert "neeko is not installed" in delivery["error"]
    assert stack.runs(room) == []
    [notice] = [m for m in stack.messages(room) if m["sender"] == "ghost"]
    assert notice["sender_kind"] == "system" and "neeko is not installed" in notice["content"]
    # the daemon told the server what it can run
    runtimes = {
        r["name"]: r
        for r in stack.api("GET", f"/api/computers/{computer['id']}")["computer"]["runtimes"]
    }
    assert runtimes["codex"]["available"] is True and runtimes["neeko"]["available"] is False


def test_console_follows_a_run_until_it_ends(stack: Stack) -> None:
    room = stack.room()
    stack.send(room, "[fake:sleep=1] slow")
    [run] = stack.wait_run(room, "running")
    result = stack.server.pal("console", "runs", "--follow", str(run["id"]), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "thread.started" in result.stdout
    assert stack.run(run["id"])["status"] == "completed"


@dataclass
class Solo:
    """A server's own daemon with the fake codex, for tests that stop or kill the daemon."""

    server: ServerProcess
    daemon: DaemonProcess
    api_key: str
    env: dict[str, str]
    records: Path

    def start_long_run(self, scenario: str) -> tuple[dict[str, Any], int]:
        """Post a message whose run sleeps and has a grandchild; returns the running run
        (with its pid) and the grandchild's pid."""
        message = {
            "room": "general",
            "sender": "alice",
            "mentions": ["codex"],
            "content": f"[fake:grandchild] {scenario} [fake:sleep=120] long",
        }
        httpx.post(f"{self.server.url}/api/messages", json=message).raise_for_status()

        def running() -> dict[str, Any] | None:
            runs = httpx.get(f"{self.server.url}/api/runs").json()["runs"]
            return runs[0] if runs and runs[0]["pid"] else None

        run: dict[str, Any] = wait_until(running, timeout=20)
        pid_file = self.records / f"grandchild-{run['id']}.pid"
        grandchild = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip()))
        return run, grandchild


@pytest.fixture
def solo(server: ServerProcess, make_daemon: Any, tmp_path: Path) -> Solo:
    bin_dir = install_fakes(tmp_path / "bin")
    (tmp_path / "codex-home").mkdir()
    computer_id, api_key = provision(server)
    body = {"agent_key": "codex", "display_name": "Codex", "runtime": "codex"}
    httpx.post(
        f"{server.url}/api/agents/onboard", json={**body, "computer_id": computer_id}
    ).raise_for_status()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CODEX_HOME": str(tmp_path / "codex-home"),
        "FAKE_RECORD_DIR": str(tmp_path),
        "PAL_KILL_GRACE": "0.5",
    }
    daemon = make_daemon(server, "--interval", "300", api_key=api_key, extra_env=env)
    return Solo(server, daemon, api_key, env, tmp_path)


def test_a_stopping_daemon_kills_its_runs_and_finishes_them(solo: Solo) -> None:
    run, grandchild = solo.start_long_run("")
    assert solo.daemon.terminate() == 0
    finished = httpx.get(f"{solo.server.url}/api/runs/{run['id']}").json()["run"]
    assert (finished["status"], finished["error"]) == ("killed", "killed: the daemon stopped")
    wait_until(lambda: gone(run["pid"]) and gone(grandchild), timeout=5)


def test_a_daemon_restarted_after_a_crash_kills_what_its_runs_left_running(
    solo: Solo, make_daemon: Any
) -> None:
    run, grandchild = solo.start_long_run("[fake:ignore_sigterm]")
    records = solo.daemon.home / "runs"
    wait_until(lambda: list(records.glob("*.json")))

    solo.daemon.kill()  # kill -9: the daemon cleans up nothing
    assert not gone(run["pid"]) and not gone(grandchild)

    make_daemon(solo.server, "--interval", "300", api_key=solo.api_key, extra_env=solo.env)
    wait_until(lambda: gone(run["pid"]) and gone(grandchild), timeout=10)
    assert not list(records.glob("*.json"))
