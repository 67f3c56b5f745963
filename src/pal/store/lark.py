"""Lark: the senders allowed to reach agents (lark_users), the events the bots received
(lark_events, the newest :data:`EVENTS_KEPT` per bot), the room of each Lark chat
(lark_chats) and the Lark messages turned into pal messages (lark_messages, whose unique
``(app_id, lark_message_id)`` dedupes re-pushed events)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict, as_dicts
from pal.store.run_output import storable
from pal.store.tables import (
    deliveries,
    lark_chats,
    lark_events,
    lark_messages,
    lark_users,
    runs,
    utcnow,
)

EVENTS_KEPT = 1000
OUTCOMES = ("delivered", "unauthorized", "duplicate", "ignored", "error")

# -- authorized senders ----------------------------------------------------------------------


def list_lark_users(conn: Connection) -> list[dict[str, Any]]:
    return as_dicts(conn.execute(sa.select(lark_users).order_by(lark_users.c.user_id)))


def find_lark_user(conn: Connection, user_id: str) -> dict[str, Any] | None:
    if "\x00" in user_id:
        return None
    row = conn.execute(sa.select(lark_users).where(lark_users.c.user_id == user_id)).first()
    return as_dict(row) if row else None


def add_lark_user(conn: Connection, user_id: str, name: str) -> tuple[dict[str, Any], bool]:
    """Authorize ``user_id``, or rename it if it is already. Returns (user, created)."""
    existing = find_lark_user(conn, user_id)
    if existing is not None:
        conn.execute(lark_users.update().where(lark_users.c.user_id == user_id).values(name=name))
        return {**existing, "name": name}, False
    row = {"user_id": user_id, "name": name, "created_at": utcnow()}
    conn.execute(lark_users.insert().values(row))
    return row, True


def delete_lark_user(conn: Connection, user_id: str) -> dict[str, Any]:
    """Remove ``user_id`` (:class:`NotFound` if it is not authorized); returns the row."""
    user = find_lark_user(conn, user_id)
    if user is None:
        raise NotFound("Lark user", user_id)
    conn.execute(lark_users.delete().where(lark_users.c.user_id == user_id))
    return user


def authorized_user(conn: Connection, ids: Iterable[str | None]) -> dict[str, Any] | None:
    """The lark_users row matching any of ``ids`` (a sender's union_id, open_id, user_id)."""
    wanted = sorted({i for i in ids if i and "\x00" not in i})
    if not wanted:
        return None
    row = conn.execute(
        sa.select(lark_users).where(lark_users.c.user_id.in_(wanted)).limit(1)
    ).first()
    return as_dict(row) if row else None


# -- events ------------------------------------------------------------------------------------

_EVENT_FIELDS = ("event_id", "event_type", "message_id", "chat_id", "chat_type", "sender_id")
_SIZES = {"chat_type": 16}


def _text(value: Any, size: int) -> str | None:
    return None if value is None else storable(str(value))[:size]


def record_event(
    conn: Connection,
    app_id: str,
    payload: Mapping[str, Any],
    *,
    outcome: str,
    detail: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Store one received event (``fields``: event_id, event_type, message_id, chat_id,
    chat_type, sender_id; missing ones are read from the payload) and trim the bot's events
    to the newest :data:`EVENTS_KEPT`. Returns the row."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    values = {**_from_payload(payload), **{k: v for k, v in fields.items() if v is not None}}
    unknown = set(values) - set(_EVENT_FIELDS)
    if unknown:
        raise ValueError(f"unknown event fields: {sorted(unknown)}")
    row: dict[str, Any] = {
        "app_id": app_id,
        **{
            name: _text(values.get(name), 16 if name == "chat_type" else 128)
            for name in _EVENT_FIELDS
        },
        "outcome": outcome,
        "detail": _text(detail, 4000),
        "payload": dict(payload),
        "received_at": utcnow(),
    }
    row["id"] = conn.execute(
        lark_events.insert().values(row).returning(lark_events.c.id)
    ).scalar_one()
    _trim_events(conn, app_id)
    return row


def _trim_events(conn: Connection, app_id: str) -> None:
    # One index probe: the id of the oldest event to keep, then a range delete below it.
    oldest_kept = conn.execute(
        sa.select(lark_events.c.id)
        .where(lark_events.c.app_id == app_id)
        .order_by(lark_events.c.id.desc())
        .offset(EVENTS_KEPT - 1)
        .limit(1)
    ).scalar()
    if oldest_kept is not None:
        conn.execute(
            lark_events.delete().where(
                lark_events.c.app_id == app_id, lark_events.c.id < oldest_kept
            )
        )


def _object(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _from_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed fields of a schema 2.0 ``im.message.receive_v1`` envelope."""
    header = _object(payload, "header")
    event = _object(payload, "event")
    message = _object(event, "message")
    sender_ids = _object(_object(event, "sender"), "sender_id")
    found = {
        "event_id": header.get("event_id"),
        "event_type": header.get("event_type"),
        "message_id": message.get("message_id"),
        "chat_id": message.get("chat_id"),
        "chat_type": message.get("chat_type"),
        "sender_id": sender_ids.get("union_id") or sender_ids.get("open_id"),
    }
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


def list_events(
    conn: Connection, *, app_id: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Received events, newest first, of every bot or of ``app_id``."""
    query = sa.select(lark_events).order_by(lark_events.c.id.desc()).limit(limit)
    if app_id is not None:
        query = query.where(lark_events.c.app_id == app_id)
    return as_dicts(conn.execute(query))


# -- chats and messages (the bridge's) ---------------------------------------------------------


def find_chat(conn: Connection, app_id: str, chat_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(lark_chats).where(lark_chats.c.app_id == app_id, lark_chats.c.chat_id == chat_id)
    ).first()
    return as_dict(row) if row else None


def add_chat(
    conn: Connection, app_id: str, chat_id: str, room_id: str, chat_type: str | None
) -> dict[str, Any]:
    """Record that ``app_id``'s chat ``chat_id`` is the room ``room_id``."""
    row = {
        "app_id": app_id,
        "chat_id": chat_id,
        "room_id": room_id,
        "chat_type": chat_type,
        "created_at": utcnow(),
    }
    conn.execute(lark_chats.insert().values(row))
    return row


def find_message(conn: Connection, app_id: str, lark_message_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(lark_messages).where(
            lark_messages.c.app_id == app_id,
            lark_messages.c.lark_message_id == lark_message_id,
        )
    ).first()
    return as_dict(row) if row else None


def add_message(
    conn: Connection,
    app_id: str,
    lark_message_id: str,
    *,
    chat_id: str | None = None,
    pal_message_id: int | None = None,
    delivery_id: int | None = None,
) -> dict[str, Any] | None:
    """Record a Lark message; ``None`` when ``(app_id, lark_message_id)`` is recorded
    already (a re-pushed event: the caller drops it)."""
    if find_message(conn, app_id, lark_message_id) is not None:
        return None
    row = {
        "app_id": app_id,
        "lark_message_id": lark_message_id,
        "chat_id": chat_id,
        "pal_message_id": pal_message_id,
        "delivery_id": delivery_id,
        "reaction_id": None,
        "created_at": utcnow(),
    }
    row["id"] = conn.execute(
        lark_messages.insert().values(row).returning(lark_messages.c.id)
    ).scalar_one()
    return row


def update_message(conn: Connection, message_id: int, **values: Any) -> None:
    """Set ``pal_message_id``, ``delivery_id`` or ``reaction_id`` of a recorded message."""
    allowed = {"pal_message_id", "delivery_id", "reaction_id"}
    if not values or set(values) - allowed:
        raise ValueError(f"update_message sets only {sorted(allowed)}")
    conn.execute(lark_messages.update().where(lark_messages.c.id == message_id).values(values))


# -- the bridge's lookups (pal.lark.bridge) ------------------------------------------------------


def list_chats(conn: Connection) -> list[dict[str, Any]]:
    """Every Lark chat linked to a room (the bridge keeps them in memory)."""
    return as_dicts(conn.execute(sa.select(lark_chats).order_by(lark_chats.c.created_at)))


def message_of_pal_message(
    conn: Connection, app_id: str, pal_message_id: int
) -> dict[str, Any] | None:
    """The Lark message of ``app_id`` that became the pal message ``pal_message_id``."""
    row = conn.execute(
        sa.select(lark_messages)
        .where(
            lark_messages.c.pal_message_id == pal_message_id,
            lark_messages.c.app_id == app_id,
        )
        .limit(1)
    ).first()
    return as_dict(row) if row else None


def newest_message_in_chat(conn: Connection, app_id: str, chat_id: str) -> dict[str, Any] | None:
    """The newest Lark message the bot received in ``chat_id``."""
    row = conn.execute(
        sa.select(lark_messages)
        .where(lark_messages.c.app_id == app_id, lark_messages.c.chat_id == chat_id)
        .order_by(lark_messages.c.id.desc())
        .limit(1)
    ).first()
    return as_dict(row) if row else None


def get_message_row(conn: Connection, row_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(lark_messages).where(lark_messages.c.id == row_id)).first()
    return as_dict(row) if row else None


def open_reactions(conn: Connection) -> list[dict[str, Any]]:
    """Lark messages whose reaction is still on, each with ``ended``: true when its
    delivery failed, or was acked and has no running run left (its run ended, maybe while
    the server was down), so the reaction should come off."""
    running = (
        sa.select(runs.c.id)
        .where(runs.c.delivery_id == lark_messages.c.delivery_id, runs.c.status == "running")
        .exists()
    )
    query = (
        sa.select(
            lark_messages, deliveries.c.status.label("delivery_status"), running.label("running")
        )
        .select_from(
            lark_messages.outerjoin(deliveries, deliveries.c.id == lark_messages.c.delivery_id)
        )
        .where(lark_messages.c.reaction_id.is_not(None))
        .order_by(lark_messages.c.id)
    )
    found = []
    for row in as_dicts(conn.execute(query)):
        status, running_now = row.pop("delivery_status"), bool(row.pop("running"))
        row["ended"] = status in (None, "failed") or (status == "acked" and not running_now)
        found.append(row)
    return found
