"""The database handle: engines, one serialised SQLite writer, and async entry points.

Store functions are plain synchronous functions ``fn(conn, *args)`` over a SQLAlchemy Core
connection. The server awaits them through :meth:`Database.read` and :meth:`Database.write`:

* **SQLite** (WAL): every write runs on one writer thread with its own connection. Jobs
  queued while a transaction is open are committed together (group commit), each inside its
  own SAVEPOINT when one of them fails, so a failing job never takes its neighbours down and
  never leaves half its rows behind. ``BEGIN IMMEDIATE`` takes the write lock up front, so
  concurrent posts never fail with "database is locked". Reads run on a small thread pool
  with their own connections.
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
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from pal.store.cache import CACHE_KEY, RoutingCache, job_keeps_cache

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
    # Set for jobs awaited from an event loop: the result is handed over on that loop.
    loop: asyncio.AbstractEventLoop | None = None
    future: Any = None  # asyncio.Future when ``loop`` is set, else concurrent.futures.Future


def _settle(outcomes: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in outcomes:
        if job.future.done():  # an awaiting request was cancelled; the write stands
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class _SQLiteWriter:
    """One thread, one connection, group commit; see the module docstring.

    The connection also carries the routing cache (``store/cache.py``), which this class
    keeps coherent: cleared after jobs that may change what it holds, after a rollback, and
    when another connection has changed the database.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cache = RoutingCache()
        self._data_version: int | None = None
        self._thread = threading.Thread(target=self._run, name="pal-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[Any]:
        job = _Job(fn, args, future=concurrent.futures.Future())
        self._queue.put(job)
        future: concurrent.futures.Future[Any] = job.future
        return future

    def submit_async(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, loop=loop, future=loop.create_future())
        self._queue.put(job)
        future: asyncio.Future[Any] = job.future
        return future

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
        conn.info[CACHE_KEY] = self._cache
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch, stop = self._take_batch(first)
                self._report(self._run_batch(conn, batch))
        finally:
            conn.close()

    def _check_data_version(self, conn: Connection) -> None:
        version = conn.exec_driver_sql("PRAGMA data_version").scalar()
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    def _call(self, conn: Connection, job: _Job) -> Any:
        try:
            return job.fn(conn, *job.args)
        finally:
            if not job_keeps_cache(job.fn):
                self._cache.clear()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        """Commit ``batch`` in one transaction. Jobs run back to back without savepoints
        (the common case: nothing fails); if any job raises, the whole transaction is rolled
        back and the batch re-run with a savepoint per job, so each job still commits or
        fails on its own."""
        if len(batch) > 1:
            try:
                with conn.begin():
                    self._check_data_version(conn)
                    values = [self._call(conn, job) for job in batch]
            except Exception:
                self._cache.clear()  # re-run below, isolating each job in a savepoint
            else:
                return [(job, True, value) for job, value in zip(batch, values, strict=True)]
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            with conn.begin():
                self._check_data_version(conn)
                for job in batch:
                    try:
                        with conn.begin_nested():
                            outcomes.append((job, True, self._call(conn, job)))
                    except Exception as exc:  # the job's own error, reported to its caller
                        self._cache.clear()
                        outcomes.append((job, False, exc))
        except Exception as exc:  # BEGIN or COMMIT failed: nothing in this batch was written
            self._cache.clear()
            log.warning("sqlite write batch failed: %s", exc, extra={"action": "write_failed"})
            return [(job, False, exc) for job in batch]
        return outcomes

    @staticmethod
    def _report(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        """Hand results to their callers: one wake-up per event loop, not one per job."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for outcome in outcomes:
            loop = outcome[0].loop
            if loop is None:
                _settle([outcome])
            else:
                by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop has closed; nobody is waiting any more
                pass


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
            result: T = await self._writer.submit_async(fn, args)
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
