"""Agents: create or update, onboard (create + assign), edit, delete, assign."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.server.api.fields import AGENT_SEGMENT, AgentKey, Body, JSONObject, Runtime
from pal.server.deps import DB, HubDep
from pal.server.hub import Hub
from pal.server.openapi import UPDATED
from pal.store import agents as agents_store

router = APIRouter(tags=["agents"])

DisplayName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"\S")]
Description = Annotated[str, Field(max_length=4000)]


class AgentUpdate(Body):
    display_name: DisplayName | None = Field(
        default=None, validation_alias=AliasChoices("display_name", "name")
    )
    runtime: Runtime | None = None
    description: Description | None = Field(
        default=None, validation_alias=AliasChoices("description", "desc")
    )
    config: JSONObject | None = None


class AgentCreate(AgentUpdate):
    key: AgentKey = Field(validation_alias=AliasChoices("key", "agent_key"))


class AgentOnboard(AgentCreate):
    computer_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None


class Assignment(Body):
    computer_id: Annotated[str, Field(min_length=1, max_length=40)] | None


def _announce(hub: Hub, key: str, computer_id: str | None, previous: str | None) -> None:
    """Tell the daemon sockets of the computers concerned that an agent was assigned,
    removed or changed (kind ``assignment``)."""
    if computer_id is not None or previous is not None:
        hub.publish(
            "assignment", agent_key=key, computer_id=computer_id, previous_computer_id=previous
        )


def _upsert(conn: Connection, key: str, body: AgentUpdate) -> tuple[dict[str, Any], bool]:
    return agents_store.upsert_agent(
        conn,
        key,
        display_name=body.display_name,
        runtime=body.runtime,
        description=body.description,
        config=body.config,
    )


@router.get("/api/agents")
async def list_agents(db: DB) -> dict[str, Any]:
    return {"agents": await db.read(agents_store.list_agents)}


@router.get(f"/api/agents/{{key:{AGENT_SEGMENT}}}")
async def get_agent(key: str, db: DB) -> dict[str, Any]:
    return {"agent": await db.read(agents_store.get_agent, key)}


@router.post("/api/agents", status_code=201, responses=UPDATED)
async def create_agent(
    body: AgentCreate, db: DB, hub: HubDep, response: Response
) -> dict[str, Any]:
    """Create an agent, or update the given fields of an existing one (200)."""
    agent, created = await db.write(_upsert, body.key, body)
    _announce(hub, body.key, agent["computer_id"], agent["computer_id"])
    response.status_code = 201 if created else 200
    return {"agent": agent, "created": created}


@router.post("/api/agents/onboard", status_code=201, responses=UPDATED)
async def onboard_agent(
    body: AgentOnboard, db: DB, hub: HubDep, response: Response
) -> dict[str, Any]:
    """Create or update an agent and, with ``computer_id``, assign it to that computer —
    all or nothing."""

    def write(conn: Connection) -> tuple[dict[str, Any], bool, str | None]:
        agent, created = _upsert(conn, body.key, body)
        previous = agent["computer_id"]
        if body.computer_id is not None:
            agent = agents_store.assign_agent(conn, body.key, body.computer_id)
        return agent, created, previous

    agent, created, previous = await db.write(write)
    _announce(hub, body.key, agent["computer_id"], previous)
    response.status_code = 201 if created else 200
    return {"agent": agent, "created": created}


@router.patch(f"/api/agents/{{key:{AGENT_SEGMENT}}}")
async def update_agent(key: str, body: AgentUpdate, db: DB, hub: HubDep) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        agents_store.get_agent(conn, key)  # PATCH edits an agent; it never creates one
        agent, _ = _upsert(conn, key, body)
        return agent

    agent = await db.write(write)
    _announce(hub, key, agent["computer_id"], agent["computer_id"])
    return {"agent": agent}


@router.delete(f"/api/agents/{{key:{AGENT_SEGMENT}}}")
async def delete_agent(key: str, db: DB, hub: HubDep) -> dict[str, Any]:
    """Delete the agent, its assignment, memberships (subscriptions) and active deliveries."""
    result = await db.write(agents_store.delete_agent, key)
    _announce(hub, key, None, result["agent"]["computer_id"])
    return result


@router.post("/api/agents/{key}/assignment")
async def assign_agent(key: str, body: Assignment, db: DB, hub: HubDep) -> dict[str, Any]:
    """Assign the agent to a computer, or unassign it with ``{"computer_id": null}``."""

    def write(conn: Connection) -> tuple[dict[str, Any], str | None]:
        previous = agents_store.get_agent(conn, key)["computer_id"]
        return agents_store.assign_agent(conn, key, body.computer_id), previous

    agent, previous = await db.write(write)
    _announce(hub, key, agent["computer_id"], previous)
    return {"agent": agent}
