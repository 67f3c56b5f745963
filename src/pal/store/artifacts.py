"""Artifacts: files uploaded to the server and served at ``/artifacts/<id>``.

An artifact is ``active`` until it expires (``expires_at``, NULL for never) or is revoked
(``revoked_at``, for good); then it is ``expired`` or ``revoked`` and its URL answers 410.
Cleanup deletes the files of expired and revoked artifacts and records ``removed_at``; the
row stays, so the URL keeps saying why it is gone. The files themselves are handled by
``server/artifact_files.py``; this module only keeps the rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store import agents as agents_store
from pal.store import rooms as rooms_store
from pal.store import runs as runs_store
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import artifacts, rooms, utcnow

Status = Literal["active", "expired", "revoked"]

ID_PREFIX = "art_"


def new_artifact_id() -> str:
    """A random id (128 bits): the URL ``/artifacts/<id>`` is a capability, so it must not be
    guessable."""
    return ID_PREFIX + secrets.token_urlsafe(16)


def status(artifact: dict[str, Any], now: datetime | None = None) -> Status:
    """``revoked`` (it was revoked), ``expired`` (``expires_at`` has passed) or ``active``."""
    if artifact["revoked_at"] is not None:
        return "revoked"
    expires = artifact["expires_at"]
    if expires is not None and expires <= (now or utcnow()):
        return "expired"
    return "active"


def resolve_refs(
    conn: Connection, *, created_by: str | None, room: str | None, run_id: int | None
) -> str | None:
    """Check that the agent ``created_by``, the room ``room`` (id or name) and the run
    ``run_id`` exist (:class:`NotFound` for the first that does not); returns the room's id."""
    if created_by is not None:
        agents_store.get_agent(conn, created_by)
    room_id = rooms_store.get_room(conn, room)["id"] if room is not None else None
    if run_id is not None:
        runs_store.get_run(conn, run_id)
    return room_id


def insert_artifact(
    conn: Connection,
    *,
    artifact_id: str,
    title: str,
    mime: str,
    size: int,
    sha256: str,
    path: str,
    created_by: str | None = None,
    room: str | None = None,
    run_id: int | None = None,
    computer_id: str | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record an artifact whose file is already in place; the references are checked as by
    :func:`resolve_refs` in the same transaction. Returns the row (``room`` holds the room's
    name)."""
    room_id = resolve_refs(conn, created_by=created_by, room=room, run_id=run_id)
    row = {
        "id": artifact_id,
        "title": title,
        "mime": mime,
        "size": size,
        "sha256": sha256,
        "path": path,
        "created_by": created_by,
        "room_id": room_id,
        "run_id": run_id,
        "computer_id": computer_id,
        "created_at": now or utcnow(),
        "expires_at": expires_at,
        "revoked_at": None,
        "removed_at": None,
    }
    conn.execute(artifacts.insert().values(**row))
    return get_artifact(conn, artifact_id)


def _with_room() -> sa.Select[Any]:
    return sa.select(artifacts, rooms.c.name.label("room")).select_from(
        artifacts.outerjoin(rooms, rooms.c.id == artifacts.c.room_id)
    )


def find_artifact(conn: Connection, artifact_id: str) -> dict[str, Any] | None:
    """The artifact ``artifact_id`` (with its room's name as ``room``), or None."""
    if "\x00" in artifact_id:  # no id has one, and PostgreSQL refuses NUL in a query
        return None
    row = conn.execute(_with_room().where(artifacts.c.id == artifact_id)).first()
    return as_dict(row) if row else None


def get_artifact(conn: Connection, artifact_id: str) -> dict[str, Any]:
    """The artifact ``artifact_id``; :class:`NotFound` otherwise."""
    found = find_artifact(conn, artifact_id)
    if found is None:
        raise NotFound("artifact", artifact_id)
    return found


def list_artifacts(
    conn: Connection, *, before: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Artifacts newest first, at most ``limit``; with ``before`` (an artifact id), only
    those listed after it (:class:`NotFound` if there is no such artifact)."""
    query = _with_room()
    if before is not None:
        ref = get_artifact(conn, before)
        query = query.where(
            sa.or_(
                artifacts.c.created_at < ref["created_at"],
                sa.and_(artifacts.c.created_at == ref["created_at"], artifacts.c.id < before),
            )
        )
    query = query.order_by(artifacts.c.created_at.desc(), artifacts.c.id.desc()).limit(limit)
    return as_dicts(conn.execute(query))


def revoke_artifact(
    conn: Connection, artifact_id: str, now: datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """Revoke the artifact (its URL answers 410 from now on); returns ``(artifact, changed)``.
    Revoking it again changes nothing (``changed`` false, the first ``revoked_at`` stays)."""
    changed = conn.execute(
        artifacts.update()
        .where(artifacts.c.id == artifact_id, artifacts.c.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    ).rowcount
    return get_artifact(conn, artifact_id), bool(changed)


def list_removable(
    conn: Connection, now: datetime | None = None, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Expired or revoked artifacts whose file has not been removed yet, oldest first."""
    gone = sa.or_(
        artifacts.c.revoked_at.is_not(None),
        sa.and_(artifacts.c.expires_at.is_not(None), artifacts.c.expires_at <= (now or utcnow())),
    )
    query = (
        sa.select(artifacts)
        .where(artifacts.c.removed_at.is_(None), gone)
        .order_by(artifacts.c.created_at)
        .limit(limit)
    )
    return as_dicts(conn.execute(query))


def mark_removed(conn: Connection, artifact_ids: Iterable[str], now: datetime | None = None) -> int:
    """Record that the files of ``artifact_ids`` were deleted; returns how many rows changed
    (an artifact already marked keeps its first ``removed_at``)."""
    ids = sorted(set(artifact_ids))
    if not ids:
        return 0
    result = conn.execute(
        artifacts.update()
        .where(artifacts.c.id.in_(ids), artifacts.c.removed_at.is_(None))
        .values(removed_at=now or utcnow())
    )
    return int(result.rowcount)


def known_ids(conn: Connection, artifact_ids: Iterable[str]) -> set[str]:
    """The subset of ``artifact_ids`` that are artifacts."""
    ids = sorted(set(artifact_ids))
    if not ids:
        return set()
    rows = conn.execute(sa.select(artifacts.c.id).where(artifacts.c.id.in_(ids)))
    return set(rows.scalars())
