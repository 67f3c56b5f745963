"""Runs: the daemon starts (and acks), reports the pid of, ships the output of and finishes
runs, and reports how kill and restart requests went; anyone lists them, reads their output
and asks for a kill or restart, which reaches the run's daemon as a run action."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from sqlalchemy.engine import Connection

from pal.errors import NotFound, PalError
from pal.server.api.deliveries import Attempt, DaemonId, ErrorText
from pal.server.api.fields import MAX_ID, WHOLE, Body, Id, JSONObject, Limit, Runtime
from pal.server.auth import CurrentComputer
from pal.server.deps import DB, HubDep, SettingsDep
from pal.server.hub import Hub
from pal.server.openapi import UPDATED
from pal.store import rooms as rooms_store
from pal.store import run_actions as actions_store
from pal.store import run_output as output_store
from pal.store import runs as runs_store
from pal.store.tables import utcnow

router = APIRouter(tags=["runs"])

RunId = Annotated[int, Path(ge=1, le=MAX_ID)]
ActionId = Annotated[int, Path(ge=1, le=MAX_ID)]
RunStatus = Literal["running", "completed", "failed", "killed", "lost"]
Pid = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True), WHOLE]
RequestedBy = Annotated[str, Field(min_length=1, max_length=80)]
# Filters: what an agent key or a computer id can be (so odd bytes are a 422, not a query).
AgentFilter = Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
ComputerFilter = Annotated[
    str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


class NoRunningRun(NotFound):
    def __init__(self, key: str, room: str) -> None:
        super().__init__("running run of agent", key)
        self.message = f"agent {key!r} has no running run in room {room!r}: nothing to restart"
        self.args = (self.message,)


class RunStart(Body):
    delivery_id: Id
    attempt: Attempt
    daemon_id: DaemonId
    session_id: Id | None = None
    runtime: Runtime | None = Field(default=None, description="default: the agent's runtime")
    dry_run: StrictBool = False
    pid: Pid | None = None
    restart_of: Id | None = Field(default=None, description="the run this one restarts")


class PidReport(Body):
    pid: Pid


class RunFinish(Body):
    status: Literal["completed", "failed", "killed"]
    exit_code: Annotated[int, Field(ge=-(2**31), le=2**31 - 1, strict=True), WHOLE] | None = None
    error: ErrorText | None = None
    usage: JSONObject | None = None


class ActionRequest(Body):
    requested_by: RequestedBy | None = None


def publish_run(hub: Hub, run: dict[str, Any]) -> None:
    hub.publish(
        "run",
        run_id=run["id"],
        status=run["status"],
        agent_key=run["agent_key"],
        room_id=run["room_id"],
    )


@router.post("/api/runs", status_code=201, responses=UPDATED)
async def start_run(
    body: RunStart,
    computer: CurrentComputer,
    db: DB,
    hub: HubDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Start a run for a claimed delivery and ack it, in one transaction (201); a retry of
    the same start answers the same run (200)."""
    run, delivery, created = await db.write(
        lambda conn: runs_store.start_run(
            conn,
            computer_id=computer["id"],
            delivery_id=body.delivery_id,
            attempt=body.attempt,
            daemon_id=body.daemon_id,
            session_id=body.session_id,
            runtime=body.runtime,
            dry_run=body.dry_run,
            pid=body.pid,
            restart_of=body.restart_of,
            lease_until=utcnow() + timedelta(seconds=settings.heartbeat_grace),
        )
    )
    if created:
        publish_run(hub, run)
    else:
        response.status_code = 200
    return {"run": run, "delivery": delivery}


@router.get("/api/runs")
async def list_runs(
    db: DB,
    agent: AgentFilter = None,
    status: RunStatus | None = None,
    computer: ComputerFilter = None,
    room: Annotated[str | None, Query(min_length=1, description="room id or name")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="older than this id")] = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Runs, newest first, filtered by agent, status, computer and room."""

    def read(conn: Connection) -> dict[str, Any]:
        room_id = rooms_store.get_room(conn, room)["id"] if room else None
        items = runs_store.list_runs(
            conn,
            agent_key=agent,
            status=status,
            computer_id=computer,
            room_id=room_id,
            before=before,
            limit=limit,
        )
        return {"runs": items}

    return await db.read(read)


@router.get("/api/runs/{run_id}")
async def get_run(run_id: RunId, db: DB) -> dict[str, Any]:
    """A run with its kill and restart requests."""

    def read(conn: Connection) -> dict[str, Any]:
        run = runs_store.get_run(conn, run_id)
        return {"run": run, "actions": actions_store.list_for_run(conn, run_id)}

    return await db.read(read)


@router.post("/api/runs/{run_id}/pid")
async def set_pid(
    run_id: RunId, body: PidReport, computer: CurrentComputer, db: DB
) -> dict[str, Any]:
    run = await db.write(
        lambda conn: runs_store.set_pid(conn, run_id, computer_id=computer["id"], pid=body.pid)
    )
    return {"run": run}


@router.post("/api/runs/{run_id}/finish")
async def finish_run(
    run_id: RunId, body: RunFinish, computer: CurrentComputer, db: DB, hub: HubDep
) -> dict[str, Any]:
    """Record how the run ended; the same finish again is answered unchanged, a different
    one is 409. A ``lost`` run may still be finished (its computer came back)."""
    run, changed = await db.write(
        lambda conn: runs_store.finish_run(
            conn,
            run_id,
            computer_id=computer["id"],
            status=body.status,
            exit_code=body.exit_code,
            error=body.error,
            usage=body.usage,
        )
    )
    if changed:
        publish_run(hub, run)
    return {"run": run}


def publish_action(hub: Hub, action: dict[str, Any]) -> None:
    hub.publish(
        "run_action",
        action_id=action["id"],
        run_id=action["run_id"],
        computer_id=action["computer_id"],
    )


async def _act(
    run_id: int, action: str, body: ActionRequest | None, db: DB, hub: Hub
) -> dict[str, Any]:
    requested_by = body.requested_by if body else None
    created = await db.write(actions_store.request_action, run_id, action, requested_by)
    publish_action(hub, created)
    return {"action": created}


@router.post("/api/runs/{run_id}/kill", status_code=202)
async def kill_run(
    run_id: RunId, db: DB, hub: HubDep, body: ActionRequest | None = None
) -> dict[str, Any]:
    """Ask the run's daemon to kill it."""
    return await _act(run_id, "kill", body, db, hub)


@router.post("/api/runs/{run_id}/restart", status_code=202)
async def restart_run(
    run_id: RunId, db: DB, hub: HubDep, body: ActionRequest | None = None
) -> dict[str, Any]:
    """Ask the run's daemon to restart it (a new run with ``restart_of``)."""
    return await _act(run_id, "restart", body, db, hub)


@router.post("/api/rooms/{room}/agents/{key}/restart", status_code=202)
async def restart_agent_in_room(
    room: str, key: str, db: DB, hub: HubDep, body: ActionRequest | None = None
) -> dict[str, Any]:
    """Restart the agent's newest running run in the room (the room's "restart" button)."""
    requested_by = body.requested_by if body else None

    def write(conn: Connection) -> dict[str, Any]:
        found = rooms_store.get_room(conn, room)
        run = runs_store.newest_running(conn, agent_key=key, room_id=found["id"])
        if run is None:
            raise NoRunningRun(key, found["name"])
        action = actions_store.request_action(conn, run["id"], "restart", requested_by)
        return {"action": action, "run": run}

    result = await db.write(write)
    publish_action(hub, result["action"])
    return result


# -- output ----------------------------------------------------------------------------------

MAX_OUTPUT_CHUNKS = 256
MAX_CHUNK_CHARS = 1_048_576
MAX_BATCH_CHARS = 4 * MAX_CHUNK_CHARS
# The raw body: the batch's text with every character JSON-escaped (6 bytes), and room to spare.
MAX_OUTPUT_BODY = 32 * 1024 * 1024
MAX_OUTPUT_PAGE = 5000

Seq = Annotated[int, Field(ge=0, le=MAX_ID, strict=True), WHOLE]
Stream = Literal["stdout", "stderr"]


class TooLarge(PalError):
    status = 413


class OutputChunk(BaseModel):
    """One piece of a run's output. ``data`` may hold NUL (stored as U+FFFD)."""

    model_config = ConfigDict(extra="forbid")

    seq: Seq = Field(description="the chunk's number in the run: 0, 1, 2, ...")
    stream: Stream
    data: Annotated[str, Field(max_length=MAX_CHUNK_CHARS)]


class OutputBatch(Body):
    chunks: Annotated[list[OutputChunk], Field(min_length=1, max_length=MAX_OUTPUT_CHUNKS)]


class ActionReport(Body):
    status: Literal["done", "failed"]
    error: ErrorText | None = None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions themselves."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _too_large(what: str) -> TooLarge:
    return TooLarge(
        f"{what}: send at most {MAX_OUTPUT_CHUNKS} chunks and "
        f"{MAX_BATCH_CHARS:,} characters of data per request (split the batch)"
    )


def _invalid(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in errors])


async def _output_batch(request: Request) -> OutputBatch:
    """The output body, read up to :data:`MAX_OUTPUT_BODY` bytes (413 past that, before
    the rest is read) and validated like any other body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_OUTPUT_BODY:
        raise _too_large(f"the request body is {int(declared):,} bytes")
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_OUTPUT_BODY:
            raise _too_large(f"the request body is over {MAX_OUTPUT_BODY:,} bytes")
    try:
        payload = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        error = getattr(exc, "msg", None) or str(exc)
        raise _invalid([{"type": "json_invalid", "msg": error, "ctx": {"error": error}}]) from None
    if not isinstance(payload, dict):
        raise _invalid([{"type": "model_attributes_type", "msg": "must be a JSON object"}])
    try:
        return OutputBatch.model_validate(payload)
    except ValidationError as exc:
        raise _invalid([dict(e) for e in exc.errors(include_url=False)]) from None


@router.post(
    "/api/runs/{run_id}/output",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(OutputBatch.model_json_schema())}},
        }
    },
)
async def append_output(
    run_id: RunId,
    computer: CurrentComputer,
    batch: Annotated[OutputBatch, Depends(_output_batch)],
    db: DB,
    hub: HubDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Store a batch of the run's output; chunks already stored (or trimmed) are ignored.
    Only the newest PAL_RUN_OUTPUT_LIMIT bytes of a run are kept."""
    size = sum(len(chunk.data) for chunk in batch.chunks)
    if size > MAX_BATCH_CHARS:
        raise _too_large(f"the chunks hold {size:,} characters of data")
    chunks = [{"seq": c.seq, "stream": c.stream, "data": c.data} for c in batch.chunks]
    answer = await db.write(
        lambda conn: output_store.append_output(
            conn,
            run_id,
            computer_id=computer["id"],
            chunks=chunks,
            limit=settings.run_output_limit,
        )
    )
    seq = answer.pop("seq")
    if seq is not None:
        hub.publish("run_output", run_id=run_id, seq=seq)
    return answer


@router.get("/api/runs/{run_id}/output")
async def get_output(
    run_id: RunId,
    db: DB,
    after: Annotated[
        int, Query(ge=-1, le=MAX_ID, description="only chunks with a higher seq")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=MAX_OUTPUT_PAGE)] = 1000,
    stream: Annotated[
        Stream | Literal[""] | None, Query(description="stdout or stderr; empty: both")
    ] = None,
) -> dict[str, Any]:
    """The run and its kept output after ``after``, oldest first; ``more`` says another
    page is waiting (ask again with ``after=next_after``)."""
    return await db.read(
        lambda conn: output_store.read_output(
            conn, run_id, after=after, limit=limit, stream=stream or None
        )
    )


@router.post("/api/runs/{run_id}/actions/{action_id}")
async def complete_action(
    run_id: RunId, action_id: ActionId, body: ActionReport, computer: CurrentComputer, db: DB
) -> dict[str, Any]:
    """The run's daemon reports a kill or restart ``done`` or ``failed``; the same report
    again answers the action, a different one is 409."""
    action, _ = await db.write(
        lambda conn: actions_store.complete_action(
            conn,
            run_id,
            action_id,
            computer_id=computer["id"],
            status=body.status,
            error=body.error,
        )
    )
    return {"action": action}
