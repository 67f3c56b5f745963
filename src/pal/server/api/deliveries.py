"""Deliveries: list, and create by hand."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.server.api.fields import MAX_ID, AgentKey, Body, Id, Limit
from pal.server.deps import DB, HubDep
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import messages as messages_store

router = APIRouter(tags=["deliveries"])

Status = Literal["pending", "claimed", "acked", "failed", "muted"]


class DeliveryCreate(Body):
    agent: AgentKey = Field(validation_alias=AliasChoices("agent", "agent_key"))
    message_id: Id
    reason: Annotated[str, Field(min_length=1, max_length=64)] = "manual"


@router.get("/api/deliveries")
async def list_deliveries(
    db: DB,
    agent: Annotated[
        str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    ] = None,
    status: Status | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Limit = 50,
) -> dict[str, Any]:
    items = await db.read(
        lambda conn: deliveries_store.list_deliveries(
            conn, agent_key=agent, status=status, after=after, limit=limit
        )
    )
    return {"deliveries": items}


@router.get("/api/deliveries/{delivery_id}")
async def get_delivery(delivery_id: Annotated[int, Path(le=MAX_ID)], db: DB) -> dict[str, Any]:
    return {"delivery": await db.read(deliveries_store.get_delivery, delivery_id)}


@router.post("/api/deliveries", status_code=201)
async def create_delivery(body: DeliveryCreate, db: DB, hub: HubDep) -> dict[str, Any]:
    """Ask an agent to act on an existing message (reason ``manual`` unless given)."""

    def write(conn: Connection) -> dict[str, Any]:
        agents_store.get_agent(conn, body.agent)
        message = messages_store.get_message(conn, body.message_id)
        return deliveries_store.create_delivery(
            conn, agent_key=body.agent, message=message, reason=body.reason
        )

    delivery = await db.write(write)
    hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    return {"delivery": delivery}
