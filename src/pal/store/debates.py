"""Debates: two agents answer each other in one thread, a set number of turns.

A debate is durable state, not a task in memory: the row says whose reply is awaited
(``next_speaker``) and how many replies were counted (``turn``). Each message post asks
:func:`take_turn` whether it is the awaited reply (an agent's message, from
``next_speaker``, in the thread of ``root_message_id``); if so, the same transaction counts
it and says who gets it next, or ends the debate with a notice in the thread. A restarted
server therefore continues where the database says, with nothing to recover.

Statuses: ``running`` → ``completed`` (after ``turns`` replies) | ``stopped`` (by request).
``next_speaker`` is null once the debate has ended.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store import deliveries as deliveries_store
from pal.store import messages as messages_store
from pal.store.cache import routing_cache
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import debates, deliveries, messages, rooms, utcnow

STATUSES = ("running", "completed", "stopped")
MAX_TURNS = 50
REASON = "debate"
"""The reason of every delivery a debate makes (the topic to ``a``, each turn to the other)."""
NOTICE_SENDER = "pal"
SOURCE = "debate"
"""The ``source`` of the messages a debate posts itself (its topic and its notices)."""

_COLUMNS = (*debates.c, rooms.c.name.label("room"))
_FROM = debates.join(rooms, rooms.c.id == debates.c.room_id)
# Read on an agent's reply in a thread (the message post's path): built once.
_RUNNING = sa.select(debates).where(
    debates.c.room_id == sa.bindparam("room_id"), debates.c.status == "running"
)


def topic_text(a: str, b: str, turns: int, topic: str) -> str:
    """The message that opens a debate: it mentions ``a`` (who speaks first), not ``b``."""
    return (
        f"Debate ({turns} {'turn' if turns == 1 else 'turns'}) between @{a} and {b}: {topic}\n\n"
        f"{a} opens; then {b} and {a} answer each other in this thread, one reply per turn."
    )


def insert_debate(
    conn: Connection,
    *,
    room_id: str,
    root_message_id: int,
    a: str,
    b: str,
    topic: str,
    turns: int,
    created_by: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record a running debate whose topic message is ``root_message_id``; ``a`` speaks
    first."""
    now = now or utcnow()
    row = {
        "room_id": room_id,
        "root_message_id": root_message_id,
        "a": a,
        "b": b,
        "topic": topic,
        "turns": turns,
        "turn": 0,
        "next_speaker": a,
        "status": "running",
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
        "ended_at": None,
    }
    debate_id = conn.execute(debates.insert().values(**row).returning(debates.c.id)).scalar_one()
    _forget_running(conn, room_id)
    return get_debate(conn, int(debate_id))


def deliver_topic(
    conn: Connection, message: dict[str, Any], routed: list[dict[str, Any]], *, a: str, b: str
) -> list[dict[str, Any]]:
    """Settle the deliveries of a debate's topic message (``routed``: what routing made):
    ``a`` gets exactly one pending ``debate`` delivery whatever its mode (a routed one is
    turned into it), and ``b`` none (it first hears of the debate with ``a``'s opening
    reply). Returns the message's deliveries as they now are."""
    now = utcnow()
    settled: list[dict[str, Any]] = []
    found_a = False
    for delivery in routed:
        if delivery["agent_key"] == b:
            conn.execute(deliveries.delete().where(deliveries.c.id == delivery["id"]))
            continue
        if delivery["agent_key"] == a:
            found_a = True
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery["id"])
                .values(reason=REASON, status="pending", updated_at=now)
            )
            delivery = {**delivery, "reason": REASON, "status": "pending", "updated_at": now}
        settled.append(delivery)
    if not found_a:
        row = {
            "agent_key": a,
            "message_id": message["id"],
            "room_id": message["room_id"],
            "topic_id": message["topic_id"],
            "reason": REASON,
            "status": "pending",
        }
        settled += deliveries_store.insert_deliveries(conn, [row])
    return sorted(settled, key=lambda d: int(d["id"]))


def find_debate(conn: Connection, debate_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(*_COLUMNS).select_from(_FROM).where(debates.c.id == debate_id))
    found = row.first()
    return as_dict(found) if found else None


def get_debate(conn: Connection, debate_id: int) -> dict[str, Any]:
    """The debate ``debate_id`` (with its room's name as ``room``); :class:`NotFound`
    otherwise."""
    found = find_debate(conn, debate_id)
    if found is None:
        raise NotFound("debate", debate_id)
    return found


def list_debates(
    conn: Connection, *, room_id: str | None = None, status: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Debates newest first, by room and status."""
    query = sa.select(*_COLUMNS).select_from(_FROM)
    if room_id is not None:
        query = query.where(debates.c.room_id == room_id)
    if status is not None:
        query = query.where(debates.c.status == status)
    return as_dicts(conn.execute(query.order_by(debates.c.id.desc()).limit(limit)))


# -- the message post's hook ------------------------------------------------------------------


def running_debates(conn: Connection, room_id: str) -> list[dict[str, Any]]:
    """The room's running debates (one indexed lookup; cached on the SQLite writer)."""
    cache = routing_cache(conn)
    if cache is not None and room_id in cache.debates:
        return cache.debates[room_id]
    found = as_dicts(conn.execute(_RUNNING, {"room_id": room_id}))
    if cache is not None:
        cache.debates[room_id] = found
    return found


def _forget_running(conn: Connection, room_id: str) -> None:
    cache = routing_cache(conn)
    if cache is not None:
        cache.debates.pop(room_id, None)


def thread_root(conn: Connection, message_id: int) -> int:
    """The first message of the thread ``message_id`` is in (itself when it is no reply)."""
    up = (
        sa.select(messages.c.id, messages.c.parent_id)
        .where(messages.c.id == message_id)
        .cte("debate_thread_up", recursive=True)
    )
    up = up.union_all(
        sa.select(messages.c.id, messages.c.parent_id).where(messages.c.id == up.c.parent_id)
    )
    root = conn.execute(sa.select(up.c.id).where(up.c.parent_id.is_(None))).scalar()
    return int(root) if root is not None else message_id


def take_turn(conn: Connection, message: dict[str, Any]) -> dict[str, Any] | None:
    """Count ``message`` (just inserted, in the caller's transaction) as a debate turn if it
    is one: a reply by a running debate's ``next_speaker`` in that debate's thread. Then the
    debate moves on to the other speaker, or, at its last turn, completes and gets a notice
    in its thread. Returns the turn (``id, a, b, turn, turns, status, next_speaker,
    notice``), or None when the message is no debate turn.

    A message the caller knows is no agent reply in a thread cannot be a turn; the caller
    skips this call then, so a room without debates costs nothing more.
    """
    sender = message["sender"]
    waiting = [d for d in running_debates(conn, message["room_id"]) if d["next_speaker"] == sender]
    if not waiting:
        return None
    parent = message["parent_id"]
    debate = next((d for d in waiting if d["root_message_id"] == parent), None)
    if debate is None:
        root = thread_root(conn, parent)
        debate = next((d for d in waiting if d["root_message_id"] == root), None)
        if debate is None:
            return None
    now = message["created_at"]
    turn = int(debate["turn"]) + 1
    other = debate["b"] if sender == debate["a"] else debate["a"]
    ended = turn >= int(debate["turns"])
    values: dict[str, Any] = {"turn": turn, "updated_at": now}
    values.update(
        {"status": "completed", "next_speaker": None, "ended_at": now}
        if ended
        else {"next_speaker": other}
    )
    # Compare and set: a concurrent post (PostgreSQL) that counted this turn first wins.
    changed = conn.execute(
        debates.update()
        .where(
            debates.c.id == debate["id"],
            debates.c.status == "running",
            debates.c.turn == debate["turn"],
            debates.c.next_speaker == sender,
        )
        .values(**values)
    ).rowcount
    if changed != 1:
        _forget_running(conn, message["room_id"])
        return None
    debate.update(values)  # the cached row, when there is a cache
    if ended:
        _forget_running(conn, message["room_id"])
    notice = None
    if ended:
        notice = _notice(conn, debate, message, f"Debate finished after {turn} turns.")
    return {
        "id": debate["id"],
        "a": debate["a"],
        "b": debate["b"],
        "turn": turn,
        "turns": debate["turns"],
        "status": debate["status"],
        "next_speaker": debate["next_speaker"],
        "notice": notice,
    }


def _notice(
    conn: Connection, debate: dict[str, Any], where: dict[str, Any], text: str
) -> dict[str, Any]:
    """A system message in the debate's thread (it wakes no one: no deliveries)."""
    row = {
        "room_id": debate["room_id"],
        "topic_id": where["topic_id"],
        "parent_id": debate["root_message_id"],
        "sender": NOTICE_SENDER,
        "sender_kind": "system",
        "content": text,
        "mentions": [],
        "source": SOURCE,
        "client_msg_id": None,
        "created_at": utcnow(),
    }
    message_id = messages_store.insert_message(conn, row)
    return {"id": message_id, **row, "room": where["room"]}


# -- stop ---------------------------------------------------------------------------------------


def stop_debate(
    conn: Connection, debate_id: int, *, stopped_by: str | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """Stop a running debate: no reply counts any more, a notice says so in its thread, and
    the debate's deliveries nobody has claimed yet are failed (the awaited agent is not woken
    for a debate that is over; a claimed one may still answer, and that answer counts for
    nothing). Returns ``(debate, notice, failed deliveries)``; a debate that has already
    ended is answered as it is (no notice, nothing failed)."""
    debate = get_debate(conn, debate_id)
    if debate["status"] != "running":
        return debate, None, []
    now = utcnow()
    changed = conn.execute(
        debates.update()
        .where(debates.c.id == debate_id, debates.c.status == "running")
        .values(status="stopped", next_speaker=None, ended_at=now, updated_at=now)
    ).rowcount
    if changed != 1:  # it ended concurrently (PostgreSQL): answer it as it now is
        return get_debate(conn, debate_id), None, []
    _forget_running(conn, debate["room_id"])
    if debate["root_message_id"] is None:  # not made by pal: no thread to tell, or to fail in
        return get_debate(conn, debate_id), None, []
    failed = _fail_pending(conn, debate, now)
    who = f" by {stopped_by}" if stopped_by else ""
    text = f"Debate stopped{who} after {debate['turn']} of {debate['turns']} turns."
    root = messages_store.get_message(conn, debate["root_message_id"])
    notice = _notice(conn, debate, root, text)
    return get_debate(conn, debate_id), notice, failed


def _fail_pending(conn: Connection, debate: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    thread = (
        sa.select(messages.c.id)
        .where(messages.c.id == debate["root_message_id"])
        .cte("debate_thread", recursive=True)
    )
    thread = thread.union_all(sa.select(messages.c.id).where(messages.c.parent_id == thread.c.id))
    error = f"debate {debate['id']} was stopped before this turn was taken"
    query = (
        deliveries.update()
        .where(
            deliveries.c.reason == REASON,
            deliveries.c.status == "pending",
            deliveries.c.agent_key.in_([debate["a"], debate["b"]]),
            deliveries.c.message_id.in_(sa.select(thread.c.id)),
        )
        .values(status="failed", error=error, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.agent_key)
    )
    return [{"id": i, "agent_key": key} for i, key in conn.execute(query)]
