"""Rooms (``chat`` is the seed's alias), members, mentionables, invitations and topics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.errors import Invalid
from pal.server.api.fields import AgentKey, Body, JSONObject, Mode, RoomName
from pal.server.deps import DB, HubDep
from pal.server.openapi import UPDATED
from pal.store import agents as agents_store
from pal.store import digests as digests_store
from pal.store import messages as messages_store
from pal.store import rooms as rooms_store

router = APIRouter(tags=["rooms"])


# What _validate_settings checks, for /openapi.json.
SETTINGS_SCHEMA: dict[str, Any] = {
    "properties": {
        "hop_limit": {"type": ["integer", "null"], "minimum": 0},
        "digest_period": {
            "type": ["integer", "null"],
            "minimum": digests_store.MIN_PERIOD,
            "maximum": digests_store.MAX_PERIOD,
        },
    }
}


class RoomCreate(Body):
    name: RoomName
    kind: Annotated[str, Field(pattern=r"^(room|lark)$")] = "room"
    settings: JSONObject = Field(default_factory=dict, json_schema_extra=SETTINGS_SCHEMA)


class RoomUpdate(Body):
    settings: JSONObject = Field(
        description="settings to change: hop_limit, digest_period; null resets one to its default",
        json_schema_extra={**SETTINGS_SCHEMA, "additionalProperties": False},
    )


class AgentInvite(Body):
    agent: AgentKey = Field(validation_alias=AliasChoices("agent", "agent_key", "key"))
    mode: Mode = "mentions"


class TopicCreate(Body):
    title: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
    created_by: str | None = Field(default=None, max_length=80)


@router.get("/api/rooms")
@router.get("/api/chats")
async def list_rooms(db: DB) -> dict[str, Any]:
    """Every room with its newest message id and member count."""
    return {"rooms": await db.read(rooms_store.list_rooms)}


@router.post("/api/rooms", status_code=201)
async def create_room(body: RoomCreate, db: DB, hub: HubDep) -> dict[str, Any]:
    _validate_settings(body.settings)
    room = await db.write(
        lambda conn: rooms_store.create_room(
            conn, body.name, kind=body.kind, settings=body.settings
        )
    )
    hub.publish("room", room_id=room["id"])
    return {"room": room}


# The settings pal reads (PATCH changes only these; POST keeps any other key as given).
SETTINGS = ("hop_limit", "digest_period")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_settings(settings: dict[str, Any]) -> None:
    """Check the settings pal reads; a whole number sent as ``5.0`` is kept as ``5`` (JSON
    does not tell them apart)."""
    for name in SETTINGS:
        value = settings.get(name)
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            settings[name] = int(value)
    hop = settings.get("hop_limit")
    if hop is not None and (not _whole(hop) or hop < 0):
        raise Invalid("settings.hop_limit must be a whole number >= 0")
    period = settings.get("digest_period")
    low, high = digests_store.MIN_PERIOD, digests_store.MAX_PERIOD
    if period is not None and (not _whole(period) or not low <= period <= high):
        raise Invalid(
            f"settings.digest_period must be a whole number of seconds from {low} to {high} "
            f"(default {digests_store.DEFAULT_PERIOD})"
        )


@router.get("/api/rooms/{room}")
async def get_room(room: str, db: DB) -> dict[str, Any]:
    """The room (with its newest message id) and its topics."""

    def read(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        found["last_message_id"] = messages_store.last_message_id(conn, found["id"])
        return {"room": found, "topics": rooms_store.list_topics(conn, found["id"])}

    return await db.read(read)


@router.patch("/api/rooms/{room}")
async def update_room(room: str, body: RoomUpdate, db: DB, hub: HubDep) -> dict[str, Any]:
    """Change the room's settings: the keys given are set, a null value resets one to its
    default, the others stay as they are."""
    unknown = sorted(set(body.settings) - set(SETTINGS))
    if unknown:
        raise Invalid(
            f"unknown room setting(s) {', '.join(unknown)}; the settings are {', '.join(SETTINGS)}"
        )
    _validate_settings(body.settings)
    found = await db.write(rooms_store.update_settings, room, body.settings)
    hub.publish("room", room_id=found["id"])
    return {"room": found}


@router.get("/api/rooms/{room}/topics")
async def list_topics(room: str, db: DB) -> dict[str, Any]:
    """The room's topics, oldest first."""

    def read(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        return {"room": found["name"], "topics": rooms_store.list_topics(conn, found["id"])}

    return await db.read(read)


@router.get("/api/rooms/{room}/members")
async def list_members(room: str, db: DB) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        return {"room": found["name"], "members": rooms_store.list_members(conn, found["id"])}

    return await db.read(read)


@router.get("/api/rooms/{room}/mentionables")
async def list_mentionables(room: str, db: DB) -> dict[str, Any]:
    """Who can be @-mentioned here: every agent (mentions reach non-members too), then the
    people who wrote in the room recently."""

    def read(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        modes = rooms_store.agent_modes(conn, found["id"])
        items: list[dict[str, Any]] = [
            {
                "key": a["key"],
                "name": a["display_name"],
                "kind": "agent",
                "member": a["key"] in modes,
                "mode": modes.get(a["key"]),
            }
            for a in agents_store.list_agents(conn)
        ]
        agent_keys = {i["key"] for i in items}
        items += [
            {"key": s, "name": s, "kind": "human", "member": False, "mode": None}
            for s in rooms_store.recent_human_senders(conn, found["id"])
            if s not in agent_keys
        ]
        return {"room": found["name"], "mentionables": items}

    return await db.read(read)


@router.post("/api/rooms/{room}/agents", status_code=201, responses=UPDATED)
async def invite_agent(
    room: str, body: AgentInvite, db: DB, hub: HubDep, response: Response
) -> dict[str, Any]:
    """Invite an agent into the room with a delivery mode, or change its mode."""

    def write(conn: Connection) -> tuple[dict[str, Any], bool]:
        found = rooms_store.get_room(conn, room)
        agents_store.get_agent(conn, body.agent)
        membership, created = rooms_store.set_membership(
            conn, found["id"], body.agent, "agent", body.mode
        )
        return {**membership, "room": found["name"]}, created

    membership, created = await db.write(write)
    response.status_code = 201 if created else 200
    hub.publish("member", room_id=membership["room_id"], member=body.agent)
    return {"membership": membership, "created": created}


@router.post("/api/rooms/{room}/topics", status_code=201)
async def create_topic(room: str, body: TopicCreate, db: DB, hub: HubDep) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        return rooms_store.create_topic(conn, found["id"], body.title.strip(), body.created_by)

    topic = await db.write(write)
    hub.publish("topic", room_id=topic["room_id"], topic_id=topic["id"])
    return {"topic": topic}
