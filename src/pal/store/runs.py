"""Runs: one execution of an agent's runtime for a claimed delivery, on one computer.

Statuses: ``running`` → ``completed`` | ``failed`` | ``killed`` (the daemon's finish) or
``lost`` (its computer stopped heartbeating; a later finish still records the real outcome).
Starting a run acks its delivery in the same transaction, so a delivery is acked exactly
when a run for it exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import Conflict, Forbidden, NotFound
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import sessions as sessions_store
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import runs, utcnow

STATUSES = ("running", "completed", "failed", "killed", "lost")
FINISHED = ("completed", "failed", "killed")


def get_run(conn: Connection, run_id: int, *, lock: bool = False) -> dict[str, Any]:
    """The run ``run_id`` (:class:`NotFound` otherwise). ``lock`` holds its row until the
    transaction ends (``FOR UPDATE`` on PostgreSQL; SQLite has one writer)."""
    query = sa.select(runs).where(runs.c.id == run_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound("run", run_id)
    return as_dict(row)


def _find_started(
    conn: Connection, delivery_id: int, daemon_id: str, restart_of: int | None
) -> dict[str, Any] | None:
    query = sa.select(runs).where(
        runs.c.delivery_id == delivery_id,
        runs.c.daemon_id == daemon_id,
        runs.c.restart_of.is_(None) if restart_of is None else runs.c.restart_of == restart_of,
    )
    row = conn.execute(query.order_by(runs.c.id).limit(1)).first()
    return None if row is None else as_dict(row)


def start_run(
    conn: Connection,
    *,
    computer_id: str,
    delivery_id: int,
    attempt: int,
    daemon_id: str,
    session_id: int | None = None,
    runtime: str | None = None,
    dry_run: bool = False,
    pid: int | None = None,
    restart_of: int | None = None,
    lease_until: datetime | None = None,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Ack the delivery's claim ``attempt`` and record its run, in the caller's transaction.

    Returns ``(run, delivery, created)``. A retry (the delivery already acked by this
    attempt, and a run of it from this daemon with the same ``restart_of``) answers that run
    with ``created`` false. A stale attempt or another holder is :class:`Conflict`, as for
    :func:`deliveries.ack_delivery`.
    """
    # The delivery's row stays locked until this transaction ends, so concurrent starts of
    # it (a retry racing the first try, two restarts) take turns and the later one finds
    # the run the earlier one made (PostgreSQL; SQLite runs one writer at a time).
    delivery = deliveries_store.get_delivery(conn, delivery_id, lock=True)
    if deliveries_store.is_acked_by(
        delivery, computer_id=computer_id, daemon_id=daemon_id, attempt=attempt
    ):
        existing = _find_started(conn, delivery_id, daemon_id, restart_of)
        if existing is not None:
            return existing, delivery, False
    else:
        delivery = deliveries_store.ack_delivery(
            conn, delivery_id, computer_id=computer_id, daemon_id=daemon_id, attempt=attempt
        )
    if session_id is not None:
        session = sessions_store.get_session(conn, session_id)
        if session["agent_key"] != delivery["agent_key"]:
            raise Conflict(
                f"session {session_id} belongs to agent {session['agent_key']!r}, "
                f"not {delivery['agent_key']!r} of delivery {delivery_id}"
            )
    if restart_of is not None and get_run(conn, restart_of)["delivery_id"] != delivery_id:
        raise Conflict(
            f"run {restart_of} is not a run of delivery {delivery_id}: a restart is a new run "
            "of the same delivery"
        )
    if runtime is None:
        agent = agents_store.find_agent(conn, delivery["agent_key"])
        runtime = agent["runtime"] if agent else None
    now = utcnow()
    row = {
        "delivery_id": delivery_id,
        "message_id": delivery["message_id"],
        "room_id": delivery["room_id"],
        "topic_id": delivery["topic_id"],
        "session_id": session_id,
        "agent_key": delivery["agent_key"],
        "computer_id": computer_id,
        "daemon_id": daemon_id,
        "lease_until": lease_until,
        "runtime": runtime,
        "status": "running",
        "dry_run": dry_run,
        "pid": pid,
        "exit_code": None,
        "error": None,
        "restart_of": restart_of,
        "usage": None,
        "output_bytes": 0,
        "output_dropped": 0,
        "started_at": now,
        "finished_at": None,
        "updated_at": now,
    }
    run_id = conn.execute(runs.insert().values(**row).returning(runs.c.id)).scalar_one()
    return {"id": run_id, **row}, delivery, True


def list_runs(
    conn: Connection,
    *,
    agent_key: str | None = None,
    status: str | None = None,
    computer_id: str | None = None,
    room_id: str | None = None,
    session_id: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Runs matching every given filter, newest first; ``before`` pages to older ids."""
    query = sa.select(runs)
    for column, value in (
        (runs.c.agent_key, agent_key),
        (runs.c.status, status),
        (runs.c.computer_id, computer_id),
        (runs.c.room_id, room_id),
        (runs.c.session_id, session_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(runs.c.id < before)
    return as_dicts(conn.execute(query.order_by(runs.c.id.desc()).limit(limit)))


def newest_running(conn: Connection, *, agent_key: str, room_id: str) -> dict[str, Any] | None:
    if "\x00" in agent_key:  # no agent has one, and PostgreSQL refuses NUL in a query
        return None
    query = (
        sa.select(runs)
        .where(runs.c.agent_key == agent_key, runs.c.room_id == room_id)
        .where(runs.c.status == "running")
        .order_by(runs.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else as_dict(row)


def owned_run(
    conn: Connection, run_id: int, computer_id: str, *, lock: bool = False
) -> dict[str, Any]:
    """The run ``run_id`` if it runs on ``computer_id``: :class:`NotFound` for an unknown
    run, :class:`Forbidden` for another computer's. ``lock`` as for :func:`get_run`."""
    run = get_run(conn, run_id, lock=lock)
    if run["computer_id"] != computer_id:
        raise Forbidden(
            f"run {run_id} runs on computer {run['computer_id']!r}, not {computer_id!r}: "
            "only its own computer may report on it"
        )
    return run


def set_pid(conn: Connection, run_id: int, *, computer_id: str, pid: int) -> dict[str, Any]:
    """Record the process id of ``run_id`` (:class:`Forbidden` from another computer)."""
    run = owned_run(conn, run_id, computer_id)
    now = utcnow()
    conn.execute(runs.update().where(runs.c.id == run_id).values(pid=pid, updated_at=now))
    return {**run, "pid": pid, "updated_at": now}


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    computer_id: str,
    status: str,
    exit_code: int | None = None,
    error: str | None = None,
    usage: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record how ``run_id`` ended. Returns ``(run, changed)``.

    A ``running`` or ``lost`` run takes the outcome (a lost run's computer came back and
    knows the real one). Repeating the same finish answers the run unchanged; a different
    finish of a finished run is :class:`Conflict`.
    """
    run = owned_run(conn, run_id, computer_id)
    outcome = {"status": status, "exit_code": exit_code, "error": error, "usage": usage}
    if run["status"] in FINISHED:
        if all(run[k] == v for k, v in outcome.items()):
            return run, False
        raise Conflict(
            f"run {run_id} already finished as {run['status']} "
            f"(exit code {run['exit_code']}); a different finish is refused"
        )
    now = utcnow()
    values = {**outcome, "finished_at": now, "updated_at": now}
    row = conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status.in_(("running", "lost")))
        .values(**values)
        .returning(*runs.c)
    ).first()
    if row is None:  # finished concurrently (PostgreSQL): judge against that finish
        return finish_run(
            conn,
            run_id,
            computer_id=computer_id,
            status=status,
            exit_code=exit_code,
            error=error,
            usage=usage,
        )
    return as_dict(row), True


def mark_lost(
    conn: Connection, computer_ids: list[str], *, error: str, now: datetime
) -> list[dict[str, Any]]:
    """Mark every ``running`` run of ``computer_ids`` lost with ``error``. Returns the lost
    runs' ``id``, ``agent_key``, ``room_id`` and ``computer_id``."""
    if not computer_ids:
        return []
    result = conn.execute(
        runs.update()
        .where(runs.c.status == "running", runs.c.computer_id.in_(computer_ids))
        .values(status="lost", error=error, finished_at=now, updated_at=now)
        .returning(runs.c.id, runs.c.agent_key, runs.c.room_id, runs.c.computer_id)
    )
    return as_dicts(result)


def renew_leases(conn: Connection, *, computer_id: str, daemon_id: str, until: datetime) -> int:
    """Extend the lease of every ``running`` run this daemon started (its heartbeat)."""
    result = conn.execute(
        runs.update()
        .where(
            runs.c.status == "running",
            runs.c.computer_id == computer_id,
            runs.c.daemon_id == daemon_id,
        )
        .values(lease_until=until)
    )
    return result.rowcount or 0


def mark_expired_lost(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Mark ``running`` runs whose lease ended before ``now`` lost: the daemon that started
    them stopped heartbeating (killed, or replaced by a new daemon of the same computer).
    Returns them as :func:`mark_lost` does."""
    result = conn.execute(
        runs.update()
        .where(runs.c.status == "running", runs.c.lease_until < now)
        .values(
            status="lost",
            error=(
                "lost: the daemon running it stopped heartbeating (PAL_HEARTBEAT_GRACE "
                "passed); the outcome is unknown"
            ),
            finished_at=now,
            updated_at=now,
        )
        .returning(runs.c.id, runs.c.agent_key, runs.c.room_id, runs.c.computer_id)
    )
    return as_dicts(result)
