"""Agents: create or update, onboard (create + assign), edit, delete, assign."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.server.api.fields import AgentKey, Body, JSONObject, Runtime
from pal.server.deps import DB
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


@router.get("/api/agents/{key}")
async def get_agent(key: str, db: DB) -> dict[str, Any]:
    return {"agent": await db.read(agents_store.get_agent, key)}


@router.post("/api/agents", status_code=201)
async def create_agent(body: AgentCreate, db: DB, response: Response) -> dict[str, Any]:
    """Create an agent, or update the given fields of an existing one (200)."""
    agent, created = await db.write(_upsert, body.key, body)
    response.status_code = 201 if created else 200
    return {"agent": agent, "created": created}


@router.post("/api/agents/onboard", status_code=201)
async def onboard_agent(body: AgentOnboard, db: DB, response: Response) -> dict[str, Any]:
    """Create or update an agent and, with ``computer_id``, assign it to that computer —
    all or nothing."""

    def write(conn: Connection) -> tuple[dict[str, Any], bool]:
        agent, created = _upsert(conn, body.key, body)
        if body.computer_id is not None:
            agent = agents_store.assign_agent(conn, body.key, body.computer_id)
        return agent, created

    agent, created = await db.write(write)
    response.status_code = 201 if created else 200
    return {"agent": agent, "created": created}


@router.patch("/api/agents/{key}")
async def update_agent(key: str, body: AgentUpdate, db: DB) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        agents_store.get_agent(conn, key)  # PATCH edits an agent; it never creates one
        agent, _ = _upsert(conn, key, body)
        return agent

    return {"agent": await db.write(write)}


@router.delete("/api/agents/{key}")
async def delete_agent(key: str, db: DB) -> dict[str, Any]:
    """Delete the agent, its assignment, memberships (subscriptions) and active deliveries."""
    return await db.write(agents_store.delete_agent, key)


@router.post("/api/agents/{key}/assignment")
async def assign_agent(key: str, body: Assignment, db: DB) -> dict[str, Any]:
    """Assign the agent to a computer, or unassign it with ``{"computer_id": null}``."""
    return {"agent": await db.write(agents_store.assign_agent, key, body.computer_id)}
