"""Sessions: one conversation of an agent per (agent, room, topic), kept across runs.

A session remembers the runtime's own session id (``runtime_session_id``, e.g. a Codex
thread) and working directory, so the next run in the same place resumes it. Topic ``0`` is
stored for "no topic" (so the unique key holds) and shown as ``None``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict
from pal.store.tables import sessions, utcnow

NO_TOPIC = 0


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "topic_id": row["topic_id"] or None}


def get_session(conn: Connection, session_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
    if row is None:
        raise NotFound("session", session_id)
    return _public(as_dict(row))


def list_sessions(
    conn: Connection, *, agent_key: str | None = None, room_id: str | None = None
) -> list[dict[str, Any]]:
    query = sa.select(sessions)
    if agent_key is not None:
        query = query.where(sessions.c.agent_key == agent_key)
    if room_id is not None:
        query = query.where(sessions.c.room_id == room_id)
    return [_public(as_dict(r)) for r in conn.execute(query.order_by(sessions.c.id))]


def _find(conn: Connection, agent_key: str, room_id: str, topic: int) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(sessions).where(
            sessions.c.agent_key == agent_key,
            sessions.c.room_id == room_id,
            sessions.c.topic_id == topic,
        )
    ).first()
    return None if row is None else _public(as_dict(row))


def ensure_session(
    conn: Connection,
    *,
    agent_key: str,
    room_id: str,
    topic_id: int | None,
    runtime: str,
    cwd: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """The session of ``agent_key`` in (``room_id``, ``topic_id``), made on first use.
    Returns ``(session, created)``; an existing session is answered unchanged. The unique
    key decides a concurrent first use, so both callers get the same session."""
    topic = topic_id or NO_TOPIC
    existing = _find(conn, agent_key, room_id, topic)
    if existing is not None:
        return existing, False
    now = utcnow()
    row = {
        "agent_key": agent_key,
        "room_id": room_id,
        "topic_id": topic,
        "runtime": runtime,
        "runtime_session_id": None,
        "cwd": cwd,
        "created_at": now,
        "updated_at": now,
    }
    try:  # the savepoint keeps the transaction usable after the refused insert
        with conn.begin_nested():
            session_id = conn.execute(
                sessions.insert().values(**row).returning(sessions.c.id)
            ).scalar_one()
    except sa.exc.IntegrityError:  # made concurrently (PostgreSQL)
        existing = _find(conn, agent_key, room_id, topic)
        if existing is None:
            raise
        return existing, False
    return _public({"id": session_id, **row}), True


def set_runtime_session(
    conn: Connection, session_id: int, *, runtime_session_id: str, cwd: str | None = None
) -> dict[str, Any]:
    """Remember the runtime's session id (and, if given, the working directory)."""
    session = get_session(conn, session_id)
    changes: dict[str, Any] = {"runtime_session_id": runtime_session_id, "updated_at": utcnow()}
    if cwd is not None:
        changes["cwd"] = cwd
    conn.execute(sessions.update().where(sessions.c.id == session_id).values(**changes))
    return {**session, **changes}
