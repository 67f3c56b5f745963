"""Real ``pal daemon`` processes against a :class:`ServerProcess`, for end-to-end tests.

``start_daemon(server, "--dry-run", api_key=key)`` starts ``python -m pal daemon`` with the
server's environment (so the daemon's PAL_HOME, hence its local API token file, is the
server's home unless ``home`` is given) and waits until it has connected. The
``make_daemon`` fixture in tests/e2e/conftest.py stops every daemon a test started.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, free_port, stop_process


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    server: ServerProcess
    home: Path
    env: dict[str, str]
    local_port: int
    log: Path
    args: tuple[str, ...] = field(default=())

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def token(self) -> str:
        """The local API token (LOCK_DAEMON_TOKEN, else the daemon's token file)."""
        return self.env.get("LOCK_DAEMON_TOKEN") or (
            (self.home / "daemon.token").read_text().strip()
        )

    def output(self) -> str:
        """Everything the daemon printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def local(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the daemon's local API with its token."""
        headers = {"authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(method, self.local_url + path, headers=headers, timeout=10, **kwargs)

    def health(self) -> dict[str, Any] | None:
        """The local API's /health, or None while it does not answer."""
        try:
            response = self.local("GET", "/health")
        except (httpx.TransportError, FileNotFoundError):
            return None
        if response.status_code != 200:
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def wait_connected(self, timeout: float = 20) -> dict[str, Any]:
        """Wait until the daemon has connected to the server; returns its /health."""

        def connected() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            health = self.health()
            return health if health and health["daemon"]["computer_id"] else None

        answer: dict[str, Any] = wait_until(connected, timeout=timeout, interval=0.05)
        return answer

    def wait(self, timeout: float = 20) -> int:
        """Wait for the daemon to exit by itself; returns its exit status."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout}s:\n{self.output()}"
            ) from None

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); returns the exit status."""
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to release anything."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def provision(server: ServerProcess, name: str = "Local Demo") -> tuple[str, str]:
    """``POST /api/computers/provision`` (the Quick Start's curl); returns (id, api_key)."""
    response = httpx.post(
        f"{server.url}/api/computers/provision",
        json={"name": name, "server_url": server.url},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["computer"]["id"], body["api_key"]


def start_daemon(
    server: ServerProcess,
    *args: str,
    api_key: str | None = None,
    home: Path | None = None,
    local_port: int | None = None,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
) -> DaemonProcess:
    """Start ``pal daemon --server URL [--api-key KEY] --local-port PORT ARGS``.

    With ``wait`` (the default), returns once the daemon has connected; pass ``wait=False``
    for a daemon expected to exit by itself (``--once``, bad credentials) or to start before
    its server is reachable.
    """
    port = local_port or free_port()
    daemon_home = home or server.home
    env = {**server.env, "PAL_HOME": str(daemon_home), **(extra_env or {})}
    argv = ["--server", server.url, "--local-port", str(port)]
    if api_key is not None:
        argv += ["--api-key", api_key]
    argv += args
    log = server.home.parent / f"daemon-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pal", "daemon", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = DaemonProcess(
        proc=proc,
        server=server,
        home=daemon_home,
        env=env,
        local_port=port,
        log=log,
        args=tuple(argv),
    )
    if wait:
        daemon.wait_connected()
    return daemon
