"""Rooms, their topics and their members (an agent's membership is its subscription)."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import Conflict, NotFound
from pal.store.cache import routing_cache
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import agents, memberships, messages, rooms, topics, utcnow

DEFAULT_ROOM = "general"
DEFAULT_HOP_LIMIT = 8


def new_room_id() -> str:
    return "room_" + secrets.token_hex(8)


def create_room(
    conn: Connection, name: str, *, kind: str = "room", settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create a room named ``name``; :class:`Conflict` if the name is taken (the unique
    constraint decides, so a concurrent create of the same name is refused too)."""
    row = {
        "id": new_room_id(),
        "name": name,
        "kind": kind,
        "settings": settings or {},
        "agent_hops": 0,
        "created_at": utcnow(),
    }
    try:  # the savepoint keeps the transaction usable after the refused insert
        with conn.begin_nested():
            conn.execute(rooms.insert().values(**row))
    except sa.exc.IntegrityError:
        raise Conflict(f"room {name!r} already exists") from None
    return row


def ensure_room(conn: Connection, name: str) -> dict[str, Any]:
    """The room named ``name``, created if missing (used for the default ``general`` room)."""
    found = conn.execute(sa.select(rooms).where(rooms.c.name == name)).first()
    return as_dict(found) if found else create_room(conn, name)


# Statements on the message-post path are built once: building and cache-keying a Core
# statement costs more than running it.
_ROOM_BY_ID = sa.select(rooms).where(rooms.c.id == sa.bindparam("ref"))
_ROOM_BY_NAME = sa.select(rooms).where(rooms.c.name == sa.bindparam("ref"))
_AGENT_MODES = sa.select(memberships.c.member, memberships.c.mode).where(
    memberships.c.room_id == sa.bindparam("room_id"), memberships.c.member_kind == "agent"
)
_SET_HOPS = rooms.update().where(rooms.c.id == sa.bindparam("room_id"))
_ADD_HOP = (
    rooms.update()
    .where(rooms.c.id == sa.bindparam("room_id"))
    .values(agent_hops=rooms.c.agent_hops + 1)
    .returning(rooms.c.agent_hops)
)


def find_room(conn: Connection, ref: str) -> dict[str, Any] | None:
    if "\x00" in ref:  # no room has one, and PostgreSQL refuses NUL in a query
        return None
    cache = routing_cache(conn)
    if cache is not None and ref in cache.room_ids:
        return dict(cache.rooms[cache.room_ids[ref]])
    query = _ROOM_BY_ID if ref.startswith("room_") else _ROOM_BY_NAME
    row = conn.execute(query, {"ref": ref}).first()
    if row is None:
        return None
    room = as_dict(row)
    if cache is not None:
        cache.room_ids[ref] = room["id"]
        cache.rooms[room["id"]] = room
        return dict(room)
    return room


def get_room(conn: Connection, ref: str) -> dict[str, Any]:
    """The room whose id or name is ``ref``; :class:`NotFound` otherwise."""
    room = find_room(conn, ref)
    if room is None:
        raise NotFound("room", ref)
    return room


def list_rooms(conn: Connection) -> list[dict[str, Any]]:
    """Every room with its newest message id and member count, in creation order."""
    last = (
        sa.select(sa.func.max(messages.c.id))
        .where(messages.c.room_id == rooms.c.id)
        .scalar_subquery()
    )
    members = (
        sa.select(sa.func.count())
        .select_from(memberships)
        .where(memberships.c.room_id == rooms.c.id)
        .scalar_subquery()
    )
    query = sa.select(rooms, last.label("last_message_id"), members.label("member_count")).order_by(
        rooms.c.created_at, rooms.c.name
    )
    return as_dicts(conn.execute(query))


def set_agent_hops(conn: Connection, room_id: str, hops: int) -> None:
    conn.execute(_SET_HOPS, {"room_id": room_id, "agent_hops": hops})
    _cache_hops(conn, room_id, hops)


def _cache_hops(conn: Connection, room_id: str, hops: int) -> None:
    cache = routing_cache(conn)
    if cache is not None and room_id in cache.rooms:
        cache.rooms[room_id]["agent_hops"] = hops


def add_agent_hop(conn: Connection, room_id: str) -> int:
    """Count one more agent message in a row in the room; returns the new count."""
    hops = int(conn.execute(_ADD_HOP, {"room_id": room_id}).scalar_one())
    _cache_hops(conn, room_id, hops)
    return hops


def hop_limit(room: dict[str, Any]) -> int:
    return int(room["settings"].get("hop_limit", DEFAULT_HOP_LIMIT))


def update_settings(conn: Connection, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the settings of the room ``ref`` (a ``None`` value removes
    the key: back to its default); other keys are kept. Returns the room."""
    room = get_room(conn, ref)
    locked = sa.select(rooms.c.settings).where(rooms.c.id == room["id"]).with_for_update()
    settings = dict(conn.execute(locked).scalar_one() or {})
    for name, value in changes.items():
        if value is None:
            settings.pop(name, None)
        else:
            settings[name] = value
    conn.execute(rooms.update().where(rooms.c.id == room["id"]).values(settings=settings))
    return {**room, "settings": settings}


# -- topics ------------------------------------------------------------------------------------


def create_topic(
    conn: Connection, room_id: str, title: str, created_by: str | None = None
) -> dict[str, Any]:
    row = {"room_id": room_id, "title": title, "created_by": created_by, "created_at": utcnow()}
    topic_id = conn.execute(topics.insert().values(**row).returning(topics.c.id)).scalar_one()
    return {"id": topic_id, **row}


def get_topic(conn: Connection, topic_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(topics).where(topics.c.id == topic_id)).first()
    if row is None:
        raise NotFound("topic", topic_id)
    return as_dict(row)


def list_topics(conn: Connection, room_id: str) -> list[dict[str, Any]]:
    query = sa.select(topics).where(topics.c.room_id == room_id).order_by(topics.c.id)
    return as_dicts(conn.execute(query))


# -- members -----------------------------------------------------------------------------------


def list_members(conn: Connection, room_id: str) -> list[dict[str, Any]]:
    """Members of a room; agents carry their display name and runtime."""
    query = (
        sa.select(
            memberships.c.member,
            memberships.c.member_kind,
            memberships.c.mode,
            memberships.c.created_at,
            agents.c.display_name,
            agents.c.runtime,
        )
        .select_from(memberships.outerjoin(agents, agents.c.key == memberships.c.member))
        .where(memberships.c.room_id == room_id)
        .order_by(memberships.c.member_kind, memberships.c.member)
    )
    return as_dicts(conn.execute(query))


def agent_modes(conn: Connection, room_id: str) -> dict[str, str]:
    """``{agent_key: mode}`` for the agent members of a room (the routing input)."""
    cache = routing_cache(conn)
    if cache is not None and room_id in cache.agent_modes:
        return dict(cache.agent_modes[room_id])
    modes = {member: mode for member, mode in conn.execute(_AGENT_MODES, {"room_id": room_id})}
    if cache is not None:
        cache.agent_modes[room_id] = modes
        return dict(modes)
    return modes


def _periodic_start(conn: Connection, room_id: str) -> dict[str, Any]:
    """A member that becomes ``periodic`` starts its digests from the room's newest message,
    and its first period from now (``store/digests.py``)."""
    newest = conn.execute(
        sa.select(sa.func.max(messages.c.id)).where(messages.c.room_id == room_id)
    ).scalar()
    return {"cursor": int(newest or 0), "last_digest_at": utcnow()}


def set_membership(
    conn: Connection, room_id: str, member: str, member_kind: str, mode: str
) -> tuple[dict[str, Any], bool]:
    """Add ``member`` to the room, or change its mode. Returns (membership, created).
    Becoming ``periodic`` (not staying so) restarts its digests from now (no digest of the
    room's history)."""
    key = (memberships.c.room_id == room_id) & (memberships.c.member == member)
    existing = conn.execute(sa.select(memberships).where(key)).first()
    if existing is None:
        row = {
            "room_id": room_id,
            "member": member,
            "member_kind": member_kind,
            "mode": mode,
            "cursor": 0,
            "last_digest_at": None,
            "created_at": utcnow(),
            **(_periodic_start(conn, room_id) if mode == "periodic" else {}),
        }
        try:
            with conn.begin_nested():
                conn.execute(memberships.insert().values(**row))
            return row, True
        except sa.exc.IntegrityError:  # invited concurrently (PostgreSQL): set its mode
            existing = conn.execute(sa.select(memberships).where(key)).first()
            if existing is None:
                raise
    values: dict[str, Any] = {"mode": mode, "member_kind": member_kind}
    if mode == "periodic" and existing.mode != "periodic":
        values.update(_periodic_start(conn, room_id))
    conn.execute(memberships.update().where(key).values(**values))
    return {**as_dict(existing), **values}, False


def delete_memberships_of(conn: Connection, member: str) -> int:
    result = conn.execute(memberships.delete().where(memberships.c.member == member))
    return result.rowcount or 0


def recent_human_senders(conn: Connection, room_id: str, limit: int = 50) -> list[str]:
    """Distinct human senders among the room's latest messages (for @-completion)."""
    recent = (
        sa.select(messages.c.sender, messages.c.id)
        .where(messages.c.room_id == room_id, messages.c.sender_kind == "human")
        .order_by(messages.c.id.desc())
        .limit(1000)
        .subquery()
    )
    query = (
        sa.select(recent.c.sender)
        .group_by(recent.c.sender)
        .order_by(sa.func.max(recent.c.id).desc())
        .limit(limit)
    )
    return list(conn.execute(query).scalars())
