"""The database handle: engines, one serialised SQLite writer, and async entry points.

Store functions are plain synchronous functions ``fn(conn, *args)`` over a SQLAlchemy Core
connection. The server awaits them through :meth:`Database.read` and :meth:`Database.write`:

* **SQLite** (WAL): every write runs on one writer thread with its own connection. Jobs
  queued while a transaction is open are committed together (group commit), each inside its
  own SAVEPOINT when one of them fails, so a failing job never takes its neighbours down and
  never leaves half its rows behind. ``BEGIN IMMEDIATE`` takes the write lock up front, so
  concurrent posts never fail with "database is locked". Reads run on a small thread pool with their own connections.
* **PostgreSQL**: reads and writes run on a thread pool over a connection pool; each write is
  one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

T = TypeVar("T")
StoreFn = Callable[..., T]

# Most jobs a single SQLite transaction takes from the queue before committing.
GROUP_COMMIT_MAX = 128
BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def create_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine for ``url``; for SQLite, ``writer`` gives one that opens BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        poolclass=sa.pool.NullPool if writer else sa.pool.QueuePool,
    )
    event.listen(engine, "connect", _sqlite_pragmas)

    # Take transaction control from pysqlite so SAVEPOINT works and writes begin IMMEDIATE
    # (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl).
    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class _SQLiteWriter:
    """One thread, one connection, group commit with a savepoint per job."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pal-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        job = _Job(fn, args)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
        batch = [first]
        while len(batch) < GROUP_COMMIT_MAX:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self) -> None:
        conn = self._engine.connect()
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch, stop = self._take_batch(first)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        """Commit ``batch`` in one transaction. Jobs run back to back without savepoints
        (the common case: nothing fails); if any job raises, the whole transaction is rolled
        back and the batch re-run with a savepoint per job, so each job still commits or
        fails on its own."""
        if len(batch) > 1:
            try:
                with conn.begin():
                    values = [job.fn(conn, *job.args) for job in batch]
            except Exception:
                pass  # re-run below, isolating each job in a savepoint
            else:
                for job, value in zip(batch, values, strict=True):
                    job.future.set_result(value)
                return
        results: list[tuple[bool, Any]] = []
        try:
            with conn.begin():
                for job in batch:
                    try:
                        with conn.begin_nested():
                            results.append((True, job.fn(conn, *job.args)))
                    except Exception as exc:  # the job's own error, reported to its caller
                        results.append((False, exc))
        except Exception as exc:  # BEGIN or COMMIT failed: nothing in this batch was written
            log.warning("sqlite write batch failed: %s", exc, extra={"action": "write_failed"})
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, (ok, value) in zip(batch, results, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


class Database:
    """Async access to the store for one process. Build with :func:`open_database`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.engine = create_engine(url)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4 if self.dialect == "sqlite" else 12, thread_name_prefix="pal-db"
        )
        self._writer: _SQLiteWriter | None = None
        if self.dialect == "sqlite":
            self._writer_engine = create_engine(url, writer=True)
            self._writer = _SQLiteWriter(self._writer_engine)

    # -- sync entry points (used by the async ones, CLIs and tests) --------------------------

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.connect() as conn:
            return fn(conn, *args)

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is not None:
            result: T = self._writer.submit(fn, args).result()
            return result
        with self.engine.begin() as conn:
            return fn(conn, *args)

    # -- async entry points -------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a read connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.read_sync, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction: all of it commits, or none of it."""
        if self._writer is not None:
            result: T = await asyncio.wrap_future(self._writer.submit(fn, args))
            return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.write_sync, fn, *args)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer_engine.dispose()
        self._pool.shutdown(wait=True)
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Open ``url`` (creating a SQLite file's folder) and switch SQLite to WAL mode."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            engine.dispose()
    return Database(url)
