"""``pal cli`` as agents run it: the real binary through a real ``pal daemon --dry-run``
(whose local API forwards to a real server), with the daemon's token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pal.client import ServerClient
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.daemon_process import DaemonProcess, provision
from tests.e2e.runs_helpers import start_running_run
from tests.e2e.test_console import as_json, error_line, ok

pytestmark = pytest.mark.e2e


def cli(
    daemon: DaemonProcess, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m pal cli ARGS`` with LOCK_DAEMON_URL pointing at ``daemon`` and its
    PAL_HOME (so the token file is found)."""
    base = {**daemon.server.env, "PAL_HOME": str(daemon.home), "LOCK_DAEMON_URL": daemon.local_url}
    return subprocess.run(
        [sys.executable, "-m", "pal", "cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def daemon(server: ServerProcess, make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A dry-run daemon for a provisioned computer, with agent ``codex`` assigned to it."""
    computer_id, key = provision(server)
    with ServerClient(server.url) as client:
        client.onboard_agent(
            "codex", display_name="Codex", runtime="codex", computer_id=computer_id
        )
    started = make_daemon(server, "--dry-run", api_key=key)

    def serving() -> bool:
        health = started.health()
        return health is not None and health["daemon"]["agents"] == ["codex"]

    wait_until(serving, timeout=20)
    return started


def test_cli_send_reaches_the_agent_as_a_dry_run(daemon: DaemonProcess) -> None:
    sent = cli(
        daemon, "send", "--room", "general", "--from", "alice", "--mention", "codex", "hello"
    )
    assert ok(sent) == (
        "message 1 posted in general; delivered to codex (mention_nonmember, pending)\n"
    )

    def dry_run() -> Any:
        runs = as_json(cli(daemon, "runs", "--json"))["runs"]
        return runs if runs and runs[0]["status"] == "completed" else None

    [run] = wait_until(dry_run, timeout=20)
    assert (run["agent_key"], run["message_id"], run["dry_run"]) == ("codex", 1, True)
    table = ok(cli(daemon, "runs"))
    assert "codex" in table and "completed" in table and "dry" in table

    health = as_json(cli(daemon, "health", "--json"))
    assert health["daemon"]["agents"] == ["codex"] and health["daemon"]["dry_run"] is True
    assert health["server"]["ok"] is True
    text = ok(cli(daemon, "health"))
    assert text.startswith(f"daemon: {health['daemon']['daemon_id']} at {daemon.local_url}, ")
    assert f"\nserver: ok: pal 0.1.0 at {daemon.server.url} (database: sqlite)\n" in text


def test_cli_reads_and_writes_rooms_topics_and_messages(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    rooms = as_json(cli(daemon, "rooms", "list", "--json"))["rooms"]
    assert [r["name"] for r in rooms] == ["general"]
    assert as_json(cli(daemon, "chats", "--json")) == {"rooms": rooms}
    assert "general" in ok(cli(daemon, "rooms", "list"))

    invited = cli(
        daemon, "rooms", "invite", "--room", "general", "--agent", "codex", "--mode", "all"
    )
    assert ok(invited) == "invited codex in general (mode all)\n"
    members = as_json(cli(daemon, "rooms", "members", "--room", "general", "--json"))
    assert [(m["member"], m["mode"]) for m in members["members"]] == [("codex", "all")]
    assert "codex" in ok(cli(daemon, "rooms", "members", "--room", "general"))
    bad_mode = cli(
        daemon, "rooms", "invite", "--room", "general", "--agent", "codex", "--mode", "x"
    )
    assert bad_mode.returncode == 2 and "'x' is not one of" in bad_mode.stderr

    topic = as_json(cli(daemon, "topics", "create", "--room", "general", "Investigation", "--json"))
    topic_id = topic["topic"]["id"]
    assert ok(cli(daemon, "topics", "create", "--room", "general", "Second")) == (
        f"topic {topic_id + 1} created in general: Second\n"
    )

    def send(*args: str) -> dict[str, Any]:
        payload: dict[str, Any] = as_json(cli(daemon, "send", "--room", "general", "--json", *args))
        return payload

    first = send("--from", "alice", "deploy failed [bold]x[/bold]")["message"]
    reply = send("--from", "codex", "--parent", str(first["id"]), "looking")["message"]
    assert reply["parent_id"] == first["id"] and reply["sender"] == "codex"
    note = tmp_path / "message.txt"
    note.write_text("line one\nline two ✓\n", encoding="utf-8")
    filed = send("--from", "codex", "--topic", str(topic_id), "--file", str(note))["message"]
    assert (filed["content"], filed["topic_id"]) == ("line one\nline two ✓\n", topic_id)

    def ids(*args: str) -> list[int]:
        return [
            m["id"] for m in as_json(cli(daemon, "messages", "list", "--json", *args))["messages"]
        ]

    assert ids() == [first["id"], reply["id"], filed["id"]]
    assert ids("--room", "general", "--q", "looking") == [reply["id"]]
    assert ids("--topic", str(topic_id)) == [filed["id"]]
    assert ids("--after", str(first["id"]), "--limit", "1") == [reply["id"]]
    table = ok(cli(daemon, "messages", "list", "--room", "general"))
    assert "deploy failed [bold]x[/bold]" in table  # user text is never read as Rich markup

    shown = as_json(cli(daemon, "messages", "show", str(reply["id"]), "--json"))["message"]
    assert shown == reply
    text = ok(cli(daemon, "messages", "show", str(reply["id"])))
    assert text.startswith(f"message {reply['id']} in general, reply to {first['id']}, from codex")
    assert text.endswith("\n\nlooking\n")
    assert error_line(cli(daemon, "messages", "show", "999")) == "message 999 not found"
    assert error_line(cli(daemon, "rooms", "members", "--room", "nope")) == "room 'nope' not found"


def test_cli_send_needs_text_or_a_readable_file(daemon: DaemonProcess, tmp_path: Path) -> None:
    base = ("send", "--room", "general", "--from", "alice")
    assert error_line(cli(daemon, *base), code=2) == "give the message as TEXT or with --file PATH"
    note = tmp_path / "note.txt"
    note.write_text("hi")
    both = cli(daemon, *base, "--file", str(note), "hello")
    assert error_line(both, code=2) == "give the message as TEXT or with --file PATH, not both"
    missing = tmp_path / "missing.txt"
    assert error_line(cli(daemon, *base, "--file", str(missing)), code=2) == (
        f"cannot read --file {missing}: No such file or directory"
    )
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    assert error_line(cli(daemon, *base, "--file", str(binary)), code=2) == (
        f"--file {binary} is not UTF-8 text"
    )
    assert error_line(cli(daemon, *base, "--file", str(tmp_path)), code=2).startswith(
        f"cannot read --file {tmp_path}: "
    )
    assert as_json(cli(daemon, "messages", "list", "--json"))["messages"] == []  # nothing sent


def test_cli_controls_runs_through_the_daemon(daemon: DaemonProcess) -> None:
    run = start_running_run(daemon.server.url, agent="manual")
    listed = as_json(cli(daemon, "runs", "--json"))["runs"]
    assert [(r["id"], r["status"]) for r in listed] == [(run.run_id, "running")]

    killed = ok(cli(daemon, "run-action", str(run.run_id), "kill"))
    assert killed.startswith(f"kill requested for run {run.run_id} (action ")
    restarted = as_json(
        cli(daemon, "rooms", "restart-agent", "--room", "general", "--agent", "manual", "--json")
    )
    assert restarted["run"]["id"] == run.run_id and restarted["action"]["action"] == "restart"
    text = ok(cli(daemon, "rooms", "restart-agent", "--room", "general", "--agent", "manual"))
    assert text == (  # an open restart is answered again, not recorded twice
        f"restart requested for run {run.run_id} of manual in general "
        f"(action {restarted['action']['id']}, pending)\n"
    )
    with ServerClient(daemon.server.url) as client:
        actions = client.get_run(run.run_id)["actions"]
    assert [a["action"] for a in actions] == ["kill", "restart"]

    invalid = cli(daemon, "run-action", str(run.run_id), "pause")
    assert invalid.returncode == 2 and "'pause' is not one of" in invalid.stderr
    none_running = cli(daemon, "rooms", "restart-agent", "--room", "general", "--agent", "codex")
    assert error_line(none_running) == (
        "agent 'codex' has no running run in room 'general': nothing to restart"
    )


def test_cli_needs_the_daemon_and_its_token(daemon: DaemonProcess, tmp_path: Path) -> None:
    token_file = daemon.home / "daemon.token"
    wrong = cli(daemon, "rooms", "list", env={"LOCK_DAEMON_TOKEN": "not-the-token"})
    assert error_line(wrong) == (
        f"the daemon refused the token: set LOCK_DAEMON_TOKEN or check {token_file}"
    )
    assert wrong.stdout == ""
    elsewhere = tmp_path / "other-home"  # no token file there: no token at all
    no_token = cli(daemon, "health", env={"PAL_HOME": str(elsewhere)})
    assert error_line(no_token) == (
        f"the daemon refused the token: set LOCK_DAEMON_TOKEN or check {elsewhere / 'daemon.token'}"
    )
    token = token_file.read_text().strip()
    given = cli(
        daemon, "chats", "--json", env={"PAL_HOME": str(elsewhere), "LOCK_DAEMON_TOKEN": token}
    )
    assert json.loads(ok(given))["rooms"][0]["name"] == "general"

    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = cli(daemon, "runs", env={"LOCK_DAEMON_URL": dead})
    assert error_line(unreachable) == (
        f"cannot reach the pal daemon at {dead}; is `pal daemon` running? "
        "(connection refused; set LOCK_DAEMON_URL if it listens elsewhere)"
    )
    bad_url = cli(daemon, "runs", env={"LOCK_DAEMON_URL": "localhost:4137"})
    assert error_line(bad_url, code=2) == (
        "LOCK_DAEMON_URL='localhost:4137' must start with http:// or https://"
    )


def test_cli_says_when_the_daemon_is_up_but_its_server_is_down(daemon: DaemonProcess) -> None:
    daemon.server.stop()
    listed = cli(daemon, "rooms", "list")
    assert error_line(listed).startswith(
        f"the pal daemon cannot reach the server at {daemon.server.url}: "
    )
    assert listed.stdout == ""
    health = cli(daemon, "health")
    assert health.returncode == 1
    assert f"\nserver: not healthy at {daemon.server.url}: cannot reach the server" in health.stdout
    assert json.loads(cli(daemon, "health", "--json").stdout)["server"].startswith(
        f"cannot reach the server at {daemon.server.url}: "
    )
