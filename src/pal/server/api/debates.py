"""Debates: start one (its topic message and its first delivery, to ``a``), list, show and
stop them. The turns themselves are counted where messages are posted
(:func:`pal.server.routing.post_message` asks :func:`pal.store.debates.take_turn`), so a
debate lives in the database alone and survives a server restart (docs/debates.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.errors import Invalid, NotFound
from pal.server.api.fields import MAX_ID, WHOLE, AgentKey, Body, Limit, Sender
from pal.server.deps import DB, HubDep
from pal.server.hub import Hub
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import debates as debates_store
from pal.store import rooms as rooms_store

router = APIRouter(tags=["debates"])

MAX_TOPIC_CHARS = 4000
DEFAULT_TURNS = 6
DebateId = Annotated[int, Path(ge=1, le=MAX_ID)]
Status = Literal["running", "completed", "stopped"]


class DebateStart(Body):
    room: str = Field(
        validation_alias=AliasChoices("room", "chat"),
        min_length=1,
        max_length=80,
        description="room id or name (``chat`` is accepted as an alias)",
        examples=["general"],
    )
    a: AgentKey = Field(description="the agent that speaks first (it gets the topic)")
    b: AgentKey = Field(description="the agent that answers a")
    turns: Annotated[int, Field(ge=1, le=debates_store.MAX_TURNS, strict=True), WHOLE] = Field(
        default=DEFAULT_TURNS, description="replies in all, a's and b's together"
    )
    topic: str = Field(
        min_length=1,
        max_length=MAX_TOPIC_CHARS,
        pattern=r"\S",
        description=f"what to debate, 1-{MAX_TOPIC_CHARS} characters",
    )
    created_by: Sender = Field(default="operator", description="who starts it (posts the topic)")


class DebateStop(Body):
    stopped_by: Sender | None = None


class UnknownDebater(NotFound):
    def __init__(self, side: str, key: str) -> None:
        super().__init__("agent", key)
        self.message = (
            f"{side}: agent {key!r} not found; debaters are agents "
            "(`pal console agents list` shows them)"
        )
        self.args = (self.message,)


def publish_debate(hub: Hub, debate: dict[str, Any], action: str) -> None:
    hub.publish(
        "debate",
        debate_id=debate["id"],
        room_id=debate["room_id"],
        action=action,
        status=debate["status"],
        turn=debate["turn"],
    )


def publish_turn(hub: Hub, room_id: str, turn: dict[str, Any] | None) -> None:
    """The events of a message post that was a debate turn (``turn`` from
    :func:`pal.store.debates.take_turn`; nothing when it is None)."""
    if turn is None:
        return
    if turn["notice"] is not None:
        hub.publish("message", room_id=room_id, message_id=turn["notice"]["id"])
    action = "completed" if turn["status"] == "completed" else "turn"
    publish_debate(hub, {**turn, "room_id": room_id}, action)


def _start(conn: Connection, body: DebateStart) -> dict[str, Any]:
    """Post the topic, settle its deliveries and record the debate: one transaction."""
    room = rooms_store.get_room(conn, body.room)
    for side, key in (("a", body.a), ("b", body.b)):
        if agents_store.find_agent(conn, key) is None:
            raise UnknownDebater(side, key)
    new = NewMessage(
        room=room["id"],
        sender=body.created_by,
        content=debates_store.topic_text(body.a, body.b, body.turns, body.topic),
        mentions=[body.a],
        source=debates_store.SOURCE,
    )
    posted = post_message(conn, new)
    message = posted["message"]
    settled = debates_store.deliver_topic(conn, message, posted["deliveries"], a=body.a, b=body.b)
    debate = debates_store.insert_debate(
        conn,
        room_id=room["id"],
        root_message_id=message["id"],
        a=body.a,
        b=body.b,
        topic=body.topic,
        turns=body.turns,
        created_by=body.created_by,
    )
    return {"debate": debate, "message": message, "deliveries": settled}


@router.post("/api/debates", status_code=201)
async def start_debate(body: DebateStart, db: DB, hub: HubDep) -> dict[str, Any]:
    """Start a debate: the topic is posted in the room (mentioning ``a``), ``a`` gets it as a
    ``debate`` delivery whatever its mode, and each awaited reply in the topic's thread goes
    to the other agent until ``turns`` replies have been made."""
    if body.a == body.b:
        raise Invalid(f"a and b are both {body.a!r}: a debate needs two different agents")
    started = await db.write(_start, body)
    debate = started["debate"]
    hub.publish("message", room_id=debate["room_id"], message_id=started["message"]["id"])
    for delivery in started["deliveries"]:
        if delivery["status"] == "pending":
            hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    publish_debate(hub, debate, "started")
    return started


@router.get("/api/debates")
async def list_debates(
    db: DB,
    room: Annotated[str | None, Query(max_length=80, description="room id or name")] = None,
    chat: Annotated[str | None, Query(max_length=80, description="alias of room")] = None,
    status: Status | None = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Debates newest first, by room and status."""
    ref = room or chat

    def read(conn: Connection) -> dict[str, Any]:
        room_id = rooms_store.get_room(conn, ref)["id"] if ref else None
        found = debates_store.list_debates(conn, room_id=room_id, status=status, limit=limit)
        return {"debates": found}

    return await db.read(read)


@router.get("/api/debates/{debate_id}")
async def get_debate(debate_id: DebateId, db: DB) -> dict[str, Any]:
    return {"debate": await db.read(debates_store.get_debate, debate_id)}


@router.post("/api/debates/{debate_id}/stop")
async def stop_debate(
    debate_id: DebateId, db: DB, hub: HubDep, body: DebateStop | None = None
) -> dict[str, Any]:
    """Stop a running debate (a notice in its thread; its unclaimed deliveries fail). A
    debate that has already ended is answered as it is."""
    stopped_by = body.stopped_by if body else None
    debate, notice, _failed = await db.write(
        lambda conn: debates_store.stop_debate(conn, debate_id, stopped_by=stopped_by)
    )
    # (the failed deliveries get no ``delivery`` event: that event says "pending, claim it")
    if notice is not None:
        hub.publish("message", room_id=debate["room_id"], message_id=notice["id"])
        publish_debate(hub, debate, "stopped")
    return {"debate": debate}
