"""Messages: post (with routing), page, search, show; and agent inboxes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.errors import Invalid
from pal.server.api.debates import publish_turn
from pal.server.api.fields import MAX_ID, MAX_PAGE, Body, Content, Id, Limit, Sender
from pal.server.deps import DB, HubDep
from pal.server.hub import Hub
from pal.server.responses import ORJSONResponse
from pal.server.routing import SENDER_KINDS, NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import messages as messages_store
from pal.store import rooms as rooms_store

router = APIRouter(tags=["messages"])


class MessageCreate(Body):
    room: str = Field(
        validation_alias=AliasChoices("room", "chat"),
        min_length=1,
        max_length=80,
        description="room id or name (``chat`` is accepted as an alias)",
        examples=["general"],
    )
    sender: Sender
    content: Content
    mentions: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=list, max_length=100
    )
    parent: Id | None = Field(default=None, description="message id this replies to")
    topic: Id | None = Field(default=None, description="topic id inside the room")
    client_msg_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="makes a retried post idempotent: the same sender and id post once",
    )
    sender_kind: str | None = Field(
        default=None,
        description="|".join(SENDER_KINDS),
        json_schema_extra={"enum": [*SENDER_KINDS, None]},
    )
    source: str | None = Field(default=None, max_length=32)


# The hot endpoints return their JSON response directly: letting FastAPI validate and
# re-serialise the result dict costs more than the rest of the request.


@router.post(
    "/api/messages",
    status_code=201,
    responses={200: {"description": "a duplicate client_msg_id: the message posted before"}},
)
async def create_message(body: MessageCreate, db: DB, hub: HubDep) -> ORJSONResponse:
    """Post a message; its deliveries are created in the same transaction."""
    if body.sender_kind is not None and body.sender_kind not in SENDER_KINDS:
        raise Invalid(f"sender_kind must be one of {', '.join(SENDER_KINDS)}")
    new = NewMessage(
        room=body.room,
        sender=body.sender,
        content=body.content,
        mentions=[m.lstrip("@") for m in body.mentions],
        parent=body.parent,
        topic=body.topic,
        client_msg_id=body.client_msg_id,
        sender_kind=body.sender_kind,
        source=body.source,
    )
    result = await db.write(post_message, new)
    if result["duplicate"]:
        return ORJSONResponse(result, status_code=200)
    publish_posted(hub, result)
    return ORJSONResponse(result, status_code=201)


def publish_posted(hub: Hub, result: dict[str, Any]) -> None:
    """The hub events of a new message (``post_message``'s result): the message, its pending
    deliveries and the debate turn it took. Lark's bridge posts through here too."""
    message = result["message"]
    hub.publish("message", room_id=message["room_id"], message_id=message["id"])
    for delivery in result["deliveries"]:
        if delivery["status"] == "pending":
            hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    publish_turn(hub, message["room_id"], result["debate"])


@router.get("/api/messages")
async def list_messages(
    db: DB,
    room: Annotated[str | None, Query(description="room id or name")] = None,
    chat: Annotated[str | None, Query(description="alias of room")] = None,
    topic: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    parent: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="replies to this message")
    ] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only ids greater than this")] = 0,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="the newest ids below this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    q: Annotated[str | None, Query(max_length=200, description="full-text search")] = None,
) -> ORJSONResponse:
    """Messages in id order, filtered by room, topic, thread, cursor and search words."""
    ref = room or chat

    def read(conn: Connection) -> dict[str, Any]:
        room_id = rooms_store.get_room(conn, ref)["id"] if ref else None
        items = messages_store.list_messages(
            conn,
            room_id=room_id,
            topic_id=topic,
            parent_id=parent,
            after=after,
            before=before,
            limit=limit,
            q=q,
        )
        return {"messages": items}

    return ORJSONResponse(await db.read(read))


@router.get("/api/messages/{message_id}")
async def get_message(message_id: Annotated[int, Path(ge=1, le=MAX_ID)], db: DB) -> dict[str, Any]:
    return {"message": await db.read(messages_store.get_message, message_id)}


@router.get("/api/inbox")
async def inbox(
    db: DB,
    agent: Annotated[str, Query(min_length=1, max_length=40)],
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Messages addressed to an agent, with the delivery that brought each one."""

    def read(conn: Connection) -> dict[str, Any]:
        agents_store.get_agent(conn, agent)
        return {
            "agent": agent,
            "messages": messages_store.inbox(conn, agent, after=after, limit=limit),
        }

    return await db.read(read)
