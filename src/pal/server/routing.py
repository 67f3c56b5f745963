"""Routing: which agents a new message wakes, and why.

Rules (DESIGN.md §5), applied to each agent at most once per message:

* mode ``all``: every message (reason ``all``);
* mode ``mentions``: when mentioned (``mention``), or a reply in a thread the agent already
  posted in (``thread``);
* mode ``periodic``: nothing per message except a mention (digests come separately);
* mode ``muted``: nothing, but a mention is recorded for the inbox (``mention_muted``,
  status ``muted``, never claimed);
* mode ``off``: nothing at all;
* an agent mentioned that is not a member is delivered too (``mention_nonmember``);
* an agent never gets its own message;
* a message from Lark (sender_kind ``lark``, posted by ``pal.lark.bridge``) has its
  reasons prefixed ``lark_`` (``lark_mention``), so a delivery says it came from Lark;
* loop guard: each room counts agent-authored messages since the last human one; once that
  count passes the room's ``hop_limit`` (default 8), agent messages wake nobody until a
  human writes again;
* debates (``store/debates.py``): the awaited reply in a running debate's thread is a turn;
  it goes to the other speaker (reason ``debate``, whatever its mode, past the loop guard,
  which does not count it), and once the last turn is taken the other speaker is not woken
  by the thread rule.

Mentions come from the message's ``mentions`` field and from ``@key`` in its text. The whole
post (message, deliveries, loop counter) is one write transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pal.errors import Invalid
from pal.store import agents as agents_store
from pal.store import debates as debates_store
from pal.store import deliveries as deliveries_store
from pal.store import messages as messages_store
from pal.store import rooms as rooms_store
from pal.store.cache import keeps_cache
from pal.store.tables import utcnow

MODES = ("mentions", "all", "periodic", "muted", "off")
SENDER_KINDS = ("human", "agent", "lark", "system")
MENTION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9][A-Za-z0-9_-]{0,39})")


@dataclass(frozen=True)
class Route:
    agent_key: str
    reason: str
    status: str = "pending"


@dataclass
class NewMessage:
    """A message to post; ``room`` is a room id or name."""

    room: str
    sender: str
    content: str
    mentions: list[str] = field(default_factory=list)
    parent: int | None = None
    topic: int | None = None
    client_msg_id: str | None = None
    sender_kind: str | None = None
    source: str | None = None


def text_mentions(content: str) -> list[str]:
    return MENTION_RE.findall(content)


def decide(
    *,
    sender: str,
    mentioned: set[str],
    modes: dict[str, str],
    known_agents: set[str],
    thread_agents: set[str],
) -> list[Route]:
    """Pure routing decision for one message (see the module docstring)."""
    routes: list[Route] = []
    for key, mode in sorted(modes.items()):
        if key == sender or mode == "off":
            continue
        if key in mentioned:
            if mode == "muted":
                routes.append(Route(key, "mention_muted", "muted"))
            else:
                routes.append(Route(key, "mention"))
        elif mode == "all":
            routes.append(Route(key, "all"))
        elif mode == "mentions" and key in thread_agents:
            routes.append(Route(key, "thread"))
    for key in sorted((mentioned & known_agents) - modes.keys() - {sender}):
        routes.append(Route(key, "mention_nonmember"))
    return routes


def debate_routes(routes: list[Route], turn: dict[str, Any], sender: str) -> list[Route]:
    """``routes`` for a message that was debate turn ``turn``: the other speaker gets it
    as the debate's next turn (one delivery, reason ``debate``), or, when the debate has just
    ended, is no longer woken by the thread rule alone."""
    other = turn["b"] if sender == turn["a"] else turn["a"]
    if turn["next_speaker"] is not None:
        kept = [r for r in routes if r.agent_key != other]
        return sorted([*kept, Route(other, debates_store.REASON)], key=lambda r: r.agent_key)
    return [r for r in routes if not (r.agent_key == other and r.reason == "thread")]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _duplicate(conn: Connection, message_id: int) -> dict[str, Any]:
    message = messages_store.get_message(conn, message_id)
    found = deliveries_store.list_deliveries(conn, message_id=message_id, limit=1000)
    return {
        "message": message,
        "deliveries": found,
        "duplicate": True,
        "suppressed": None,
        "debate": None,
    }


@keeps_cache
def post_message(conn: Connection, new: NewMessage) -> dict[str, Any]:
    """Insert a message and its deliveries in the caller's transaction.

    Returns ``{"message", "deliveries", "duplicate", "suppressed", "debate"}`` (``debate``:
    the debate turn the message was, see :func:`pal.store.debates.take_turn`). A repeated
    ``client_msg_id`` from the same sender returns the original message with
    ``duplicate: true`` and writes nothing.
    """
    room = rooms_store.get_room(conn, new.room)
    if new.client_msg_id is not None:
        existing = messages_store.find_by_client_msg_id(conn, new.sender, new.client_msg_id)
        if existing is not None:
            return _duplicate(conn, existing)

    topic_id = new.topic
    if new.parent is not None:
        parent = messages_store.get_message(conn, new.parent)
        if parent["room_id"] != room["id"]:
            raise Invalid(
                f"parent message {new.parent} is in room {parent['room']!r}, not {room['name']!r}"
            )
        if topic_id is None:
            topic_id = parent["topic_id"]
    if topic_id is not None:
        topic = rooms_store.get_topic(conn, topic_id)
        if topic["room_id"] != room["id"]:
            raise Invalid(f"topic {topic_id} belongs to another room, not {room['name']!r}")

    mentions = _dedupe([*new.mentions, *text_mentions(new.content)])
    known = agents_store.existing_keys(conn, [new.sender, *mentions])
    sender_kind = new.sender_kind or ("agent" if new.sender in known else "human")

    row = {
        "room_id": room["id"],
        "topic_id": topic_id,
        "parent_id": new.parent,
        "sender": new.sender,
        "sender_kind": sender_kind,
        "content": new.content,
        "mentions": mentions,
        "source": new.source,
        "client_msg_id": new.client_msg_id,
        "created_at": utcnow(),
    }
    if new.client_msg_id is None:
        message_id = messages_store.insert_message(conn, row)
    else:
        try:  # a concurrent retry (PostgreSQL) may have inserted it since the check above
            with conn.begin_nested():
                message_id = messages_store.insert_message(conn, row)
        except IntegrityError:
            existing = messages_store.find_by_client_msg_id(conn, new.sender, new.client_msg_id)
            if existing is None:
                raise
            return _duplicate(conn, existing)
    message = {"id": message_id, **row, "room": room["name"]}

    # Only an agent's reply in a thread can be a debate turn: other posts skip the lookup.
    turn = None
    if sender_kind == "agent" and new.parent is not None:
        turn = debates_store.take_turn(conn, message)

    suppressed = None
    if sender_kind == "agent" and turn is None:  # a debate bounds its own turns
        hops = rooms_store.add_agent_hop(conn, room["id"])
        if hops > rooms_store.hop_limit(room):
            suppressed = (
                f"loop guard: {hops} agent messages in a row in room {room['name']!r} "
                f"exceed its hop_limit of {rooms_store.hop_limit(room)}; "
                "a human message resumes routing"
            )
    elif sender_kind in ("human", "lark") and room["agent_hops"]:
        rooms_store.set_agent_hops(conn, room["id"], 0)

    routes: list[Route] = []
    if suppressed is None and sender_kind != "system":  # a notice wakes no one
        routes = decide(
            sender=new.sender,
            mentioned=set(mentions),
            modes=rooms_store.agent_modes(conn, room["id"]),
            known_agents=known,
            thread_agents=(
                messages_store.thread_agent_senders(conn, new.parent) if new.parent else set()
            ),
        )
    if turn is not None:
        routes = debate_routes(routes, turn, new.sender)
    created = deliveries_store.insert_deliveries(
        conn,
        [
            {
                "agent_key": r.agent_key,
                "message_id": message_id,
                "room_id": room["id"],
                "topic_id": topic_id,
                # A Lark message's deliveries say so: "lark_mention", ...
                "reason": f"lark_{r.reason}" if sender_kind == "lark" else r.reason,
                "status": r.status,
            }
            for r in routes
        ],
    )
    return {
        "message": message,
        "deliveries": created,
        "duplicate": False,
        "suppressed": suppressed,
        "debate": turn,
    }
