"""A real server bound to 0.0.0.0 asks for the admin token: the console finds it under
PAL_HOME, a daemon works with its computer key (and ``pal cli`` through it), and a client
with neither is refused with a message that says where the token is."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable

import httpx

from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import DaemonProcess


def test_a_server_reachable_from_other_hosts_asks_for_the_admin_token(
    make_server: Callable[..., ServerProcess],
    make_daemon: Callable[..., DaemonProcess],
    tmp_path,
) -> None:
    server = make_server({"PAL_HOST": "0.0.0.0"})
    assert "admin token required (it listens on 0.0.0.0" in server.log.read_text()
    token_file = server.home / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()

    refused = httpx.get(f"{server.url}/api/rooms", timeout=10)
    assert refused.status_code == 401
    assert "admin.token" in refused.json()["error"]
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200

    # The console on the server's machine finds the token by itself ...
    made = server.pal("console", "computers", "provision", "--name", "box", "--json")
    assert made.returncode == 0, made.stderr
    api_key = json.loads(made.stdout)["api_key"]
    # ... and one elsewhere (another PAL_HOME, no PAL_ADMIN_TOKEN) is told what to do.
    elsewhere = subprocess.run(
        [sys.executable, "-m", "pal", "console", "chats"],
        env={**server.env, "PAL_HOME": str(tmp_path / "elsewhere")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert elsewhere.returncode != 0
    assert "admin token" in elsewhere.stderr and "Traceback" not in elsewhere.stderr
    with_env = subprocess.run(
        [sys.executable, "-m", "pal", "console", "chats"],
        env={**server.env, "PAL_HOME": str(tmp_path / "elsewhere"), "PAL_ADMIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert with_env.returncode == 0, with_env.stderr

    # A daemon whose home has no admin token connects with its computer key, and `pal cli`
    # works through it.
    daemon = make_daemon(server, api_key=api_key)
    cli_env = {**server.env, "PAL_HOME": str(daemon.home), "LOCK_DAEMON_URL": daemon.local_url}
    sent = subprocess.run(
        [
            sys.executable,
            "-m",
            "pal",
            "cli",
            "send",
            "--room",
            "general",
            "--from",
            "alice",
            "through the daemon",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    listed = httpx.get(
        f"{server.url}/api/messages",
        params={"room": "general"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert [m["content"] for m in listed["messages"]][-1] == "through the daemon"
    # A computer key cannot provision more computers.
    more = daemon.local("POST", "/api/computers/provision", json={"name": "sneaky"})
    assert more.status_code == 403, more.text
