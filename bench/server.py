"""The server under test: a real ``python -m pal server`` process, and its database.

Like ``tests/e2e/conftest.py``: a fresh PAL_HOME, a free port on 127.0.0.1, the server's
output in a log file, SIGTERM at the end. With ``--db postgresql://...`` a scratch database
is created for the run and dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from load import MeasurementError
from pal.config import database_url, load_settings

SCRATCH_DB = "pal_bench"
# Databases the benchmark will never create or drop, whatever the URL says.
_SYSTEM_DBS = {"", "postgres", "template0", "template1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(home: Path, port: int, db_url: str | None) -> dict[str, str]:
    """The environment of the server process: nothing of the caller's PAL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
    env.update(
        PAL_HOME=str(home),
        PAL_HOST="127.0.0.1",
        PAL_PORT=str(port),
        PAL_SERVER=f"http://127.0.0.1:{port}",
        PAL_LOG_LEVEL="warning",
    )
    if db_url:
        env["PAL_DB"] = db_url
    return env


def resolved_db_url(env: dict[str, str]) -> str:
    """The SQLAlchemy URL the server will open with ``env`` (the same code the server runs)."""
    return load_settings(env).db_url


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise MeasurementError(
                f"the server exited with {self.proc.returncode}; its log ({self.log}):\n"
                + self.log.read_text(errors="replace")[-4000:]
            )

    def stop(self, timeout: float = 15) -> float | None:
        """SIGTERM, wait, SIGKILL if it hangs. Returns the seconds it took to exit after
        SIGTERM, or None when it had to be killed (or had already exited)."""
        if self.proc.poll() is not None:
            return None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        return time.monotonic() - started

    def log_tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback (most recent call last)")


def start_server(env: dict[str, str], log: Path, timeout: float = 60) -> ServerProcess:
    """Start ``python -m pal server`` with ``env`` and wait until GET /health answers 200."""
    url = env["PAL_SERVER"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pal", "server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = ServerProcess(url=url, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise MeasurementError(f"the server did not answer /health within {timeout:.0f} s; see {log}")


@contextmanager
def scratch_postgres(url: str) -> Iterator[str]:
    """Create a scratch PostgreSQL database on the server of ``url``; drop it afterwards.

    The database named in ``url`` is the scratch one, unless it names none or a system
    database, in which case ``pal_bench`` is used. An existing database is only reused
    (dropped and recreated) when its name starts with ``pal_bench``: anything else is
    refused, so a typo can never drop real data. Yields the scratch database's URL.
    """
    target = sa.engine.make_url(database_url(url, Path.cwd()))
    name = target.database or ""
    if name in _SYSTEM_DBS:
        name = SCRATCH_DB
    target = target.set(database=name)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists and not name.startswith(SCRATCH_DB):
                raise MeasurementError(
                    f"database {name!r} already exists; the benchmark only creates and drops "
                    f"scratch databases (name one starting with {SCRATCH_DB!r})"
                )
            if exists:
                conn.exec_driver_sql(f"DROP DATABASE {quoted} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise MeasurementError(f"cannot reach PostgreSQL at {target!r}: {exc}") from exc
    try:
        yield target.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        admin.dispose()
