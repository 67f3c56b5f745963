"""Deliveries: list, create by hand, and the daemon's claim, ack and fail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AliasChoices, Field, StrictBool
from sqlalchemy.engine import Connection

from pal.server.api.fields import MAX_ID, WHOLE, AgentKey, Body, Id, Limit
from pal.server.auth import CurrentComputer
from pal.server.deps import DB, HubDep, SettingsDep
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import messages as messages_store

router = APIRouter(tags=["deliveries"])

Status = Literal["pending", "claimed", "acked", "failed", "muted"]


DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
# The daemon process, as connect names it (the same rule as there).
DaemonId = Annotated[
    str,
    Field(
        pattern=r"^daemon_[A-Za-z0-9]{1,56}$",
        description="the daemon process (from connect): 'daemon_' and 1-56 letters or digits",
        examples=["daemon_3f2a9c01"],
    ),
]
# A claim attempt as the claim answered it: claims count from 1.
Attempt = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True), WHOLE]
ErrorText = Annotated[str, Field(min_length=1, max_length=10_000)]


class Claim(Body):
    daemon_id: DaemonId


class Ack(Body):
    daemon_id: DaemonId
    attempt: Attempt
    run_id: Id | None = Field(default=None, description="the run started for it (informative)")


class Fail(Body):
    daemon_id: DaemonId
    attempt: Attempt
    error: ErrorText
    retry: StrictBool = Field(default=False, description="return it to pending for another claim")


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
async def get_delivery(delivery_id: DeliveryId, db: DB) -> dict[str, Any]:
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


@router.post("/api/deliveries/{delivery_id}/claim")
async def claim_delivery(
    delivery_id: DeliveryId, body: Claim, computer: CurrentComputer, db: DB, settings: SettingsDep
) -> dict[str, Any]:
    """Claim a pending delivery for this computer's daemon ``daemon_id`` (idempotent for the
    same daemon); the lease lasts ``heartbeat_grace`` seconds and heartbeats renew it."""
    delivery = await db.write(
        lambda conn: deliveries_store.claim_delivery(
            conn,
            delivery_id,
            computer_id=computer["id"],
            daemon_id=body.daemon_id,
            lease_seconds=settings.heartbeat_grace,
        )
    )
    return {"delivery": delivery}


@router.post("/api/deliveries/{delivery_id}/ack")
async def ack_delivery(
    delivery_id: DeliveryId, body: Ack, computer: CurrentComputer, db: DB
) -> dict[str, Any]:
    """Mark the claim ``attempt`` acked (its run started); repeating it is harmless."""
    delivery = await db.write(
        lambda conn: deliveries_store.ack_delivery(
            conn,
            delivery_id,
            computer_id=computer["id"],
            daemon_id=body.daemon_id,
            attempt=body.attempt,
        )
    )
    return {"delivery": delivery}


@router.post("/api/deliveries/{delivery_id}/fail")
async def fail_delivery(
    delivery_id: DeliveryId, body: Fail, computer: CurrentComputer, db: DB, hub: HubDep
) -> dict[str, Any]:
    """End the claim ``attempt`` as failed, or with ``retry`` return it to pending (and wake
    the daemons that could claim it)."""
    delivery = await db.write(
        lambda conn: deliveries_store.fail_delivery(
            conn,
            delivery_id,
            computer_id=computer["id"],
            daemon_id=body.daemon_id,
            attempt=body.attempt,
            error=body.error,
            retry=body.retry,
        )
    )
    if delivery["status"] == "pending":
        hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    return {"delivery": delivery}
