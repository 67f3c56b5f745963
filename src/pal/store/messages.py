"""Messages: insert, page, search, threads and agent inboxes.

Message ids increase monotonically, so ``after=`` / ``before=`` cursors page on them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import deliveries, messages, rooms, sqlite_timestamp

_MESSAGE_COLUMNS = (*messages.c, rooms.c.name.label("room"))
_FROM = messages.join(rooms, rooms.c.id == messages.c.room_id)


_INSERT = messages.insert().returning(messages.c.id)
_BY_CLIENT_MSG_ID = sa.select(messages.c.id).where(
    messages.c.sender == sa.bindparam("sender"),
    messages.c.client_msg_id == sa.bindparam("client_msg_id"),
)


_SQLITE_COLUMNS = (
    "room_id",
    "topic_id",
    "parent_id",
    "sender",
    "sender_kind",
    "content",
    "mentions",
    "source",
    "client_msg_id",
    "created_at",
)
_SQLITE_INSERT = (
    f"INSERT INTO messages ({', '.join(_SQLITE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_SQLITE_COLUMNS))}) RETURNING id"
)


def insert_message(conn: Connection, row: dict[str, Any]) -> int:
    """Insert one message row; returns its id. On SQLite (the hot path of every post) the
    statement goes straight to the driver, values encoded as SQLAlchemy stores them."""
    if conn.dialect.name != "sqlite":
        return int(conn.execute(_INSERT, row).scalar_one())
    params = [row[name] for name in _SQLITE_COLUMNS]
    params[6] = json.dumps(row["mentions"])
    params[9] = sqlite_timestamp(row["created_at"])
    return int(conn.exec_driver_sql(_SQLITE_INSERT, tuple(params)).scalar_one())


def get_message(conn: Connection, message_id: int) -> dict[str, Any]:
    query = sa.select(*_MESSAGE_COLUMNS).select_from(_FROM).where(messages.c.id == message_id)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("message", message_id)
    return as_dict(row)


def find_by_client_msg_id(conn: Connection, sender: str, client_msg_id: str) -> int | None:
    params = {"sender": sender, "client_msg_id": client_msg_id}
    found = conn.execute(_BY_CLIENT_MSG_ID, params).scalar()
    return int(found) if found is not None else None


def thread_agent_senders(conn: Connection, message_id: int) -> set[str]:
    """Agents that posted anywhere in the thread of ``message_id``: the thread's root message
    and every reply under it, however deeply nested."""
    up = (
        sa.select(messages.c.id, messages.c.parent_id)
        .where(messages.c.id == message_id)
        .cte("thread_up", recursive=True)
    )
    up = up.union_all(
        sa.select(messages.c.id, messages.c.parent_id).where(messages.c.id == up.c.parent_id)
    )
    root = sa.select(up.c.id).where(up.c.parent_id.is_(None))
    down = sa.select(messages.c.id).where(messages.c.id.in_(root)).cte("thread", recursive=True)
    down = down.union_all(sa.select(messages.c.id).where(messages.c.parent_id == down.c.id))
    query = sa.select(messages.c.sender).where(
        messages.c.id.in_(sa.select(down.c.id)), messages.c.sender_kind == "agent"
    )
    return set(conn.execute(query).scalars())


def _search_clause(conn: Connection, q: str) -> sa.ColumnElement[bool] | None:
    """A full-text condition for ``q``; ``None`` when ``q`` has no searchable words.

    Words are matched as whole tokens (all of them must appear); punctuation is ignored, so
    user text can never inject FTS query syntax.
    """
    words = re.findall(r"\w+", q)
    if not words:
        return None
    if conn.dialect.name == "postgresql":
        vector = sa.func.to_tsvector(sa.literal_column("'simple'"), messages.c.content)
        query = sa.func.plainto_tsquery(sa.literal_column("'simple'"), " ".join(words))
        return vector.op("@@")(query)
    match = " ".join('"' + w.replace('"', "") + '"' for w in words)
    hits = sa.text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :match")
    return messages.c.id.in_(hits.bindparams(match=match).columns(sa.column("rowid")))


def list_messages(
    conn: Connection,
    *,
    room_id: str | None = None,
    topic_id: int | None = None,
    parent_id: int | None = None,
    after: int = 0,
    before: int | None = None,
    limit: int = 50,
    q: str | None = None,
) -> list[dict[str, Any]]:
    """Messages in id order. With ``before``, the newest ``limit`` older than it; otherwise
    the oldest ``limit`` newer than ``after``."""
    query = sa.select(*_MESSAGE_COLUMNS).select_from(_FROM)
    if room_id is not None:
        query = query.where(messages.c.room_id == room_id)
    if topic_id is not None:
        query = query.where(messages.c.topic_id == topic_id)
    if parent_id is not None:
        query = query.where(messages.c.parent_id == parent_id)
    if q:
        clause = _search_clause(conn, q)
        if clause is None:
            return []
        query = query.where(clause)
    if after:
        query = query.where(messages.c.id > after)
    if before is not None:
        query = query.where(messages.c.id < before).order_by(messages.c.id.desc()).limit(limit)
        return as_dicts(reversed(conn.execute(query).all()))
    return as_dicts(conn.execute(query.order_by(messages.c.id).limit(limit)))


def inbox(
    conn: Connection, agent_key: str, *, after: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """Messages addressed to an agent (every delivery it got, and mentions while muted)."""
    query = (
        sa.select(
            *_MESSAGE_COLUMNS,
            deliveries.c.id.label("delivery_id"),
            deliveries.c.reason.label("delivery_reason"),
            deliveries.c.status.label("delivery_status"),
        )
        .select_from(_FROM.join(deliveries, deliveries.c.message_id == messages.c.id))
        .where(deliveries.c.agent_key == agent_key, messages.c.id > after)
        .order_by(messages.c.id)
        .limit(limit)
    )
    return as_dicts(conn.execute(query))


# -- what the workbench shows per room ---------------------------------------------------------

UNREAD_CAP = 1000
_NEWER = (
    sa.select(messages.c.id)
    .where(messages.c.room_id == sa.bindparam("room_id"), messages.c.id > sa.bindparam("after"))
    .limit(sa.bindparam("cap"))
    .subquery()
)
_UNREAD = sa.select(sa.func.count()).select_from(_NEWER)
_LAST_IN_ROOM = sa.select(sa.func.max(messages.c.id)).where(
    messages.c.room_id == sa.bindparam("room_id")
)


def last_message_id(conn: Connection, room_id: str) -> int | None:
    """The newest message id in the room (None when it has none)."""
    found = conn.execute(_LAST_IN_ROOM, {"room_id": room_id}).scalar()
    return int(found) if found is not None else None


def unread_counts(
    conn: Connection, last_read: dict[str, int], cap: int = UNREAD_CAP
) -> dict[str, int]:
    """How many messages each room has after the last one read, at most ``cap`` (each count
    reads at most ``cap`` index entries). ``last_read`` maps a room id or name to a message
    id; the answer is keyed the same way, and leaves out rooms that do not exist."""
    by_id = [ref for ref in last_read if ref.startswith("room_")]
    by_name = [ref for ref in last_read if not ref.startswith("room_")]
    found = conn.execute(
        sa.select(rooms.c.id, rooms.c.name).where(
            sa.or_(rooms.c.id.in_(by_id), rooms.c.name.in_(by_name))
        )
    ).all()
    ids = {ref: room_id for room_id, name in found for ref in (room_id, name) if ref in last_read}
    return {
        ref: int(
            conn.execute(_UNREAD, {"room_id": ids[ref], "after": after, "cap": cap}).scalar_one()
        )
        for ref, after in last_read.items()
        if ref in ids
    }
