"""Artifacts end to end: a real server and daemon, and an agent (the ``command`` runtime)
whose run uploads a file with the real ``pal cli http file``; the artifact shows in the
workbench list as the agent's and is served in a sandbox until it is revoked."""

from __future__ import annotations

import json
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

REPORT = b"<!doctype html><title>Report</title><h1>Build report</h1><script>1</script>\n"


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


def finished_run(server: ServerProcess, room: str, timeout: float = 30) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        with ServerClient(server.url) as client:
            runs = client.list_runs(room=room)["runs"]
        return dict(runs[0]) if runs and runs[0]["status"] != "running" else None

    run: dict[str, Any] = wait_until(found, timeout=timeout, interval=0.1)
    return run


def stdout_of(server: ServerProcess, run_id: int) -> str:
    with ServerClient(server.url) as client:
        chunks = client.run_output(run_id)["chunks"]
    return "".join(c["data"] for c in chunks if c["stream"] == "stdout")


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], backend_env: dict[str, str]) -> ServerProcess:
    """A real server on each backend."""
    started: ServerProcess = make_server(backend_env)
    return started


@pytest.fixture
def daemon(server: ServerProcess, make_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A real daemon (no --dry-run) for a provisioned computer."""
    _computer_id, key = provision(server)
    started: DaemonProcess = make_daemon(server, api_key=key)
    return started


def command_agent(server: ServerProcess, daemon: DaemonProcess, key: str, argv: list[str]) -> None:
    """Agent ``key`` on the daemon's computer, running ``argv`` for each delivery."""
    computer_id = daemon.wait_connected()["daemon"]["computer_id"]
    with ServerClient(server.url) as client:
        client.create_agent(key, display_name=key, runtime="command", config={"command": argv})
        client.assign_agent(key, computer_id)

    def serving() -> bool:
        health = daemon.health()
        return health is not None and key in health["daemon"]["agents"]

    wait_until(serving, timeout=20)


def test_an_upload_from_a_run_is_listed_served_and_revoked(
    server: ServerProcess, daemon: DaemonProcess, tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    report.write_bytes(REPORT)
    argv = [sys.executable, "-m", "pal", "cli", "http", "file", str(report)]
    command_agent(server, daemon, "reporter", [*argv, "--mime", "text/html", "--title", "Report"])
    with ServerClient(server.url) as client:
        client.create_room("builds")
        client.post_message("builds", "alice", "publish the report", mentions=["reporter"])

    run = finished_run(server, "builds")
    assert run["status"] == "completed", (run, daemon.output())
    url = stdout_of(server, run["id"]).strip()
    assert url.startswith(f"{server.url}/artifacts/art_"), url

    listed = httpx.get(f"{server.url}/api/workbench/artifacts", timeout=10).json()["artifacts"]
    [artifact] = [a for a in listed if a["url"] == url]
    assert (artifact["title"], artifact["mime"], artifact["size"]) == (
        "Report",
        "text/html",
        len(REPORT),
    )
    assert (artifact["created_by"], artifact["room"], artifact["run_id"]) == (
        "reporter",
        "builds",
        run["id"],
    )
    assert artifact["status"] == "active" and artifact["computer_id"] == run["computer_id"]

    served = httpx.get(url, timeout=10)
    assert served.status_code == 200 and served.content == REPORT
    assert served.headers["content-type"] == "text/html; charset=utf-8"
    policy = served.headers["content-security-policy"]
    assert policy.startswith("sandbox ") and "allow-same-origin" not in policy
    assert "connect-src 'none'" in policy
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in served.headers

    revoked = subprocess.run(
        [sys.executable, "-m", "pal", "console", "artifacts", "revoke", artifact["id"]],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "its URL now answers 410" in revoked.stdout
    gone = httpx.get(url, timeout=10)
    assert gone.status_code == 410 and gone.json()["status"] == "revoked"


def test_a_run_cannot_upload_as_another_agent(
    server: ServerProcess, daemon: DaemonProcess, tmp_path: Path
) -> None:
    script = tmp_path / "impostor.py"
    script.write_text(
        "import os, httpx\n"
        "r = httpx.post(os.environ['LOCK_DAEMON_URL'] + '/api/artifacts',\n"
        "    params={'title': 'x', 'created_by': 'someone-else'}, content=b'x',\n"
        "    headers={'authorization': 'Bearer ' + os.environ['PAL_RUN_AUTH']})\n"
        "print(r.status_code, r.json()['error'])\n"
    )
    command_agent(server, daemon, "impostor", [sys.executable, str(script)])
    with ServerClient(server.url) as client:
        client.post_message("general", "alice", "go", mentions=["impostor"])
    run = finished_run(server, "general")
    assert stdout_of(server, run["id"]).startswith("403 run ")
    with ServerClient(server.url) as client:
        assert client.list_artifacts()["artifacts"] == []


def test_cli_http_file_refuses_what_it_cannot_upload(
    make_server: Callable[..., ServerProcess],
    make_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    server = make_server({"PAL_ARTIFACT_MAX_BYTES": "1024"})
    _computer_id, key = provision(server)
    daemon = make_daemon(server, api_key=key)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1025)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    cases = [
        (str(tmp_path / "missing.html"), 2, f"error: no such file: {tmp_path / 'missing.html'}"),
        (str(tmp_path), 2, f"error: {tmp_path} is a directory: give a file"),
        (str(empty), 2, f"error: {empty} is empty: an empty file cannot be an artifact"),
        (
            str(big),
            1,
            f"error: {big} is 1,025 bytes, over the server's artifact limit of 1,024 bytes "
            "(PAL_ARTIFACT_MAX_BYTES)",
        ),
    ]
    for path, code, message in cases:
        result = cli(daemon, "http", "file", path)
        assert (result.returncode, result.stderr.strip(), result.stdout) == (code, message, "")
    with ServerClient(server.url) as client:
        assert client.list_artifacts()["artifacts"] == []

    # a file within the limit, with the seed's flags; its type is guessed from its name
    data = tmp_path / "data.json"
    data.write_bytes(b'{"ok": true}')
    result = cli(daemon, "http", "file", str(data), "--ttl", "3600", "--json")
    assert result.returncode == 0, result.stderr
    artifact = json.loads(result.stdout)["artifact"]
    assert (artifact["title"], artifact["mime"], artifact["created_by"]) == (
        "data.json",
        "application/json",
        None,
    )
    assert httpx.get(artifact["url"], timeout=10).json() == {"ok": True}
