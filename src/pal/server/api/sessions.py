"""Sessions: an agent's conversation per (agent, room, topic), made on first use, and the
runtime session it resumes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import AliasChoices, Field
from sqlalchemy.engine import Connection

from pal.errors import Invalid
from pal.server.api.fields import MAX_ID, AgentKey, Body, Id, Runtime
from pal.server.api.runs import AgentFilter
from pal.server.deps import DB
from pal.server.openapi import UPDATED
from pal.store import agents as agents_store
from pal.store import rooms as rooms_store
from pal.store import runs as runs_store
from pal.store import sessions as sessions_store

router = APIRouter(tags=["sessions"])

SessionId = Annotated[int, Path(ge=1, le=MAX_ID)]
Cwd = Annotated[str, Field(min_length=1, max_length=4096)]


class SessionEnsure(Body):
    agent: AgentKey = Field(validation_alias=AliasChoices("agent", "agent_key"))
    room: str = Field(min_length=1, max_length=80, description="room id or name")
    topic_id: Id | None = None
    runtime: Runtime | None = Field(default=None, description="default: the agent's runtime")
    cwd: Cwd | None = None


class RuntimeSession(Body):
    runtime_session_id: Annotated[str, Field(min_length=1, max_length=200)]
    cwd: Cwd | None = None


@router.get("/api/sessions")
async def list_sessions(
    db: DB,
    agent: AgentFilter = None,
    room: Annotated[str | None, Query(min_length=1, description="room id or name")] = None,
) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        room_id = rooms_store.get_room(conn, room)["id"] if room else None
        return {"sessions": sessions_store.list_sessions(conn, agent_key=agent, room_id=room_id)}

    return await db.read(read)


@router.post("/api/sessions", status_code=201, responses=UPDATED)
async def ensure_session(body: SessionEnsure, db: DB, response: Response) -> dict[str, Any]:
    """The agent's session in the room (and topic): 201 when made now, 200 when it existed."""

    def write(conn: Connection) -> tuple[dict[str, Any], bool]:
        agent = agents_store.get_agent(conn, body.agent)
        found = rooms_store.get_room(conn, body.room)
        if body.topic_id is not None:
            topic = rooms_store.get_topic(conn, body.topic_id)
            if topic["room_id"] != found["id"]:
                raise Invalid(
                    f"topic {body.topic_id} belongs to another room, not {found['name']!r}"
                )
        return sessions_store.ensure_session(
            conn,
            agent_key=agent["key"],
            room_id=found["id"],
            topic_id=body.topic_id,
            runtime=body.runtime or agent["runtime"],
            cwd=body.cwd,
        )

    session, created = await db.write(write)
    response.status_code = 201 if created else 200
    return {"session": session}


@router.get("/api/sessions/{session_id}")
async def get_session(session_id: SessionId, db: DB) -> dict[str, Any]:
    return {"session": await db.read(sessions_store.get_session, session_id)}


@router.get("/api/sessions/{session_id}/runs")
async def list_session_runs(session_id: SessionId, db: DB) -> dict[str, Any]:
    """The session's runs, newest first."""

    def read(conn: Connection) -> dict[str, Any]:
        sessions_store.get_session(conn, session_id)
        return {"runs": runs_store.list_runs(conn, session_id=session_id, limit=1000)}

    return await db.read(read)


@router.post("/api/sessions/{session_id}/runtime-session")
async def set_runtime_session(
    session_id: SessionId, body: RuntimeSession, db: DB
) -> dict[str, Any]:
    """Remember the runtime's own session id, so the next run resumes it."""
    session = await db.write(
        lambda conn: sessions_store.set_runtime_session(
            conn, session_id, runtime_session_id=body.runtime_session_id, cwd=body.cwd
        )
    )
    return {"session": session}
