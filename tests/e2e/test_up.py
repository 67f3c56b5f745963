"""``pal up`` as a user runs it: one process that starts a real server and a real daemon
(``--dry-run``: deliveries become recorded runs, nothing is executed)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from pal.client import ServerClient
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.test_console import ok

pytestmark = pytest.mark.e2e

READY = "press Ctrl-C to stop"


@dataclass
class UpProcess:
    proc: subprocess.Popen[str]
    env: dict[str, str]
    stderr_log: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.stderr_log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> dict[str, str]:
        """Wait for the banner; returns its workbench URL, computer id and note."""

        def ready() -> bool:
            if READY in self.stdout:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"pal up exited with {self.proc.returncode}\n{self.stdout}\n{self.stderr}"
                )
            return False

        wait_until(ready, timeout=timeout, interval=0.05)
        found = re.search(r"workbench: (\S+)\n  computer:  (machine_\w+) \((.*)\)\n", self.stdout)
        assert found, self.stdout
        return {"url": found[1], "computer": found[2], "note": found[3]}

    def wait(self, timeout: float = 40) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pal up still running:\n{self.stderr}") from None

    def pal(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pal", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    def children(self) -> list[int]:
        return children_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                for pid in self.children():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def environ(pid: int) -> str:
    return (Path("/proc") / str(pid) / "environ").read_bytes().decode(errors="replace")


class MakeUp(Protocol):
    def __call__(
        self, home: Path, *args: str, port: int | None = None, **extra: str
    ) -> UpProcess: ...


@pytest.fixture
def make_up(tmp_path: Path) -> Iterator[MakeUp]:
    started: list[UpProcess] = []

    def make(home: Path, *args: str, port: int | None = None, **extra: str) -> UpProcess:
        port = port or free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))},
            "PAL_HOME": str(home),
            "PAL_PORT": str(port),
            "PAL_SERVER": f"http://127.0.0.1:{port}",
            "LOCK_DAEMON_URL": f"http://127.0.0.1:{free_port()}",
            **extra,
        }
        log = tmp_path / f"up-{len(started)}.stderr"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pal", "up", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        up = UpProcess(proc, env, log)
        assert proc.stdout is not None
        stdout = proc.stdout
        up.reader = threading.Thread(
            target=lambda: up.lines.extend(iter(stdout.readline, "")), daemon=True
        )
        up.reader.start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()
        if up.reader is not None:
            up.reader.join(timeout=10)
        assert up.proc.stdout is not None
        up.proc.stdout.close()


def test_up_runs_everything_and_a_mention_becomes_a_dry_run(
    make_up: MakeUp, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    up = make_up(home, "--dry-run")
    banner = up.wait_ready()
    url = up.env["PAL_SERVER"]
    assert banner["url"] == f"{url}/"
    assert httpx.get(banner["url"], timeout=5).status_code == 200
    computer_id = banner["computer"]
    assert "saved in" in banner["note"] and "new, named" in banner["note"]
    assert f"--computer-id {computer_id}" in up.stdout
    assert f"LOCK_DAEMON_URL={up.env['LOCK_DAEMON_URL']} pal cli send" in up.stdout

    saved = json.loads((home / "computer.json").read_text())
    assert saved["id"] == computer_id and saved["server_url"] == url
    assert saved["api_key"].startswith("sk_machine_")
    assert stat.S_IMODE((home / "computer.json").stat().st_mode) == 0o600
    children = up.children()
    assert len(children) == 2
    for pid in children:  # the key is in the daemon's environment, never on a command line
        assert saved["api_key"] not in cmdline(pid)
    [daemon_pid] = [pid for pid in children if " daemon " in cmdline(pid)]
    assert f"PAL_API_KEY={saved['api_key']}" in environ(daemon_pid)

    onboard = up.pal(
        "console",
        "agents",
        "onboard",
        "--key",
        "codex",
        "--name",
        "Codex",
        "--computer-id",
        computer_id,
    )
    ok(onboard)
    sent = up.pal("cli", "send", "--room", "general", "--from", "alice", "--mention", "codex", "hi")
    assert ok(sent).startswith("message 1 posted in general; delivered to codex")

    def dry_run() -> object:
        runs = json.loads(ok(up.pal("cli", "runs", "--json")))["runs"]
        return runs if runs and runs[0]["status"] == "completed" else None

    [run] = wait_until(dry_run, timeout=30)
    assert (run["agent_key"], run["computer_id"], run["dry_run"]) == ("codex", computer_id, True)

    up.proc.send_signal(signal.SIGTERM)
    assert up.wait() == 0, up.stderr
    assert not any(pid in children_of(up.proc.pid) for pid in children)
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "Z" in (Path(f"/proc/{pid}") / "stat").read_text()
        )
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)

    again = make_up(home, "--dry-run", port=int(up.env["PAL_PORT"]))
    second = again.wait_ready()
    assert second["computer"] == computer_id  # the saved computer is reused
    assert second["note"] == f"saved in {home / 'computer.json'}"
    with ServerClient(url) as client:
        assert [c["id"] for c in client.list_computers()["computers"]] == [computer_id]
    again.proc.send_signal(signal.SIGINT)
    assert again.wait() == 0, again.stderr


def test_up_stops_when_the_daemon_dies_and_replaces_a_revoked_key(
    make_up: MakeUp, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    up = make_up(home, "--dry-run")
    first = up.wait_ready()["computer"]
    children = up.children()

    ok(up.pal("console", "computers", "revoke", "--id", first))
    assert up.wait() == 1
    assert "the pal daemon exited with status 1; stopping pal" in up.stderr
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()

    again = make_up(home, "--dry-run", port=int(up.env["PAL_PORT"]))
    second = again.wait_ready()
    assert second["computer"] != first
    assert "the key saved before was refused" in second["note"]
    assert json.loads((home / "computer.json").read_text())["id"] == second["computer"]


def test_up_refuses_a_port_taken_by_a_pal_server(make_up: MakeUp, server: ServerProcess) -> None:
    up = make_up(server.home.parent / "up-home", port=int(server.env["PAL_PORT"]))
    assert up.wait() == 1
    assert up.stderr == (
        f"error: a pal server is already running at {server.url}; stop it first, or set "
        "PAL_PORT to start another one\n"
    )
    assert up.stdout == ""


def test_up_shows_why_the_server_did_not_start(make_up: MakeUp, tmp_path: Path) -> None:
    up = make_up(tmp_path / "home", PAL_DB="/proc/no-such-dir/pal.sqlite")
    assert up.wait() == 1
    first, *tail = up.stderr.splitlines()
    assert re.fullmatch(r"error: the pal server exited with status \d+; its last output:", first), (
        up.stderr
    )
    assert tail and all(line.startswith("  server | ") for line in tail)
    assert "/proc/no-such-dir" in up.stderr
