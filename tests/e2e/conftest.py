"""Real processes: a ``pal server`` on a free port over a real SQLite file (or PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, wait_until

_e2e_databases = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def pal(
        self, *args: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m pal ARGS`` against this server; returns the finished process."""
        return subprocess.run(
            [sys.executable, "-m", "pal", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        """Start the server again on the same port, home and database (after :meth:`stop`)."""
        assert self.proc.poll() is not None, "stop the server first"
        self.proc = _spawn_server(self.env, self.log)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until GET /health answers 200 (fail at once if the server exits)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=30, interval=0.05)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM, wait, SIGKILL if it hangs; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _spawn_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pal", "server"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def start_server(home: Path, extra_env: dict[str, str] | None = None) -> ServerProcess:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))},
        "PAL_HOME": str(home),
        "PAL_PORT": str(port),
        "PAL_SERVER": url,
        **(extra_env or {}),
    }
    log = home.parent / f"server-{port}.log"
    server = ServerProcess(url=url, home=home, env=env, proc=_spawn_server(env, log), log=log)
    server.wait_ready()
    return server


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(extra_env: dict[str, str] | None = None, name: str = "home") -> ServerProcess:
        server = start_server(tmp_path / name, extra_env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Any]]:
    """``make_daemon(server, *args, **kwargs)``: a real ``pal daemon``, as
    :func:`tests.e2e.daemon_process.start_daemon` starts it; stopped after the test."""
    from tests.e2e.daemon_process import DaemonProcess, start_daemon

    started: list[DaemonProcess] = []

    def make(server: ServerProcess, *args: str, wait: bool = True, **kwargs: Any) -> DaemonProcess:
        daemon = start_daemon(server, *args, wait=False, **kwargs)
        started.append(daemon)
        if wait:
            daemon.wait_connected()
        return daemon

    yield make
    for daemon in started:
        daemon.terminate()


@pytest.fixture
def empty_postgres_db(postgres_url):
    """A new, empty PostgreSQL database (a new install), dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"pal_e2e_{os.getpid()}_{next(_e2e_databases)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(postgres_url).set(database=name)
    yield url.render_as_string(hide_password=False).replace("+psycopg", "")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Server environment for each backend: the default SQLite file, or a new PostgreSQL
    database."""
    if request.param == "sqlite":
        return {}
    return {"PAL_DB": request.getfixturevalue("empty_postgres_db")}
