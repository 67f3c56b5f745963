"""Computers: provision, list, show, revoke and rotate keys (admin); and the daemon's side —
connect, heartbeat and the legacy ``POST /api/daemons`` registration (docs/daemon.md)."""

from __future__ import annotations

import logging
import secrets
import shlex
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool
from sqlalchemy.engine import Connection

from pal.server.api.deliveries import DaemonId
from pal.server.api.fields import COMPUTER_SEGMENT, AgentKey, Body
from pal.server.auth import CurrentComputer, require_same
from pal.server.deps import DB, HubDep, SettingsDep
from pal.server.hub import Hub
from pal.store import agents as agents_store
from pal.store import computers as computers_store
from pal.store import deliveries as deliveries_store
from pal.store import run_actions as run_actions_store
from pal.store import runs as runs_store
from pal.store.tables import utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["computers"])

ComputerName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"\S")]
ServerUrl = Annotated[
    str,
    Field(
        max_length=2000,
        pattern=r"^https?://[^\s/]+\S*$",
        description="the URL daemons reach this server at: http:// or https://",
    ),
]
Platform = Annotated[str, Field(max_length=64)]
Version = Annotated[str, Field(max_length=32)]
LegacyComputerId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$",
        description="1-40 letters, digits, '.', '-' or '_', starting with a letter or digit",
    ),
]


class RuntimeInfo(Body):
    """One runtime the daemon looked for (codex, claude, ...)."""

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][\w.-]*$")]
    available: StrictBool
    version: Annotated[str, Field(max_length=200)] | None = None
    path: Annotated[str, Field(max_length=4096)] | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None


Runtimes = Annotated[list[RuntimeInfo], Field(max_length=32)]


class Provision(Body):
    name: ComputerName
    server_url: ServerUrl | None = None


class Connect(Body):
    daemon_id: DaemonId | None = None
    platform: Platform | None = None
    version: Version | None = None
    runtimes: Runtimes | None = None


class Heartbeat(Body):
    daemon_id: DaemonId
    agents: Annotated[list[AgentKey], Field(max_length=1000)] = Field(default_factory=list)
    runtimes: Runtimes | None = None


class LegacyRegister(Connect):
    computer_id: LegacyComputerId
    computer_secret: Annotated[str, Field(min_length=1, max_length=200)]
    agent: AgentKey | None = None
    name: ComputerName | None = None


def _with_key(computer: dict[str, Any], api_key: str, server_url: str) -> dict[str, Any]:
    args = f"--server {shlex.quote(server_url)} --api-key {shlex.quote(api_key)}"
    return {
        "computer": computer,
        "api_key": api_key,
        "daemon_command": f"pal daemon {args}",
        "source_command": f"make install && .venv/bin/pal daemon {args}",
    }


def _server_url(request: Request, given: str | None) -> str:
    return (given or str(request.base_url)).rstrip("/")


def _runtimes(given: list[RuntimeInfo] | None) -> list[dict[str, Any]] | None:
    return None if given is None else [r.model_dump(exclude_none=True) for r in given]


@router.post("/api/computers/provision", status_code=201)
async def provision_computer(
    body: Provision, request: Request, db: DB, hub: HubDep
) -> dict[str, Any]:
    """Create a computer and its API key. The key is shown only in this answer."""
    api_key = computers_store.new_api_key()
    computer = await db.write(computers_store.create_computer, body.name, api_key)
    hub.publish("computer", computer_id=computer["id"], status=computer["status"])
    log.info(
        "computer %s provisioned (%r)",
        computer["id"],
        computer["name"],
        extra={"action": "computer_provisioned", "computer_id": computer["id"]},
    )
    return _with_key({**computer, "agents": []}, api_key, _server_url(request, body.server_url))


@router.get("/api/computers")
async def list_computers(db: DB) -> dict[str, Any]:
    return {"computers": await db.read(computers_store.list_computers)}


@router.get(f"/api/computers/{{computer_id:{COMPUTER_SEGMENT}}}")
async def get_computer(computer_id: str, db: DB) -> dict[str, Any]:
    return {"computer": await db.read(computers_store.show_computer, computer_id)}


@router.post("/api/computers/{computer_id}/revoke")
async def revoke_computer(computer_id: str, db: DB, hub: HubDep) -> dict[str, Any]:
    """Revoke the computer's key at once; its open daemon sockets are closed."""
    computer = await db.write(computers_store.revoke_computer, computer_id)
    hub.publish("computer_revoked", computer_id=computer_id)
    log.info(
        "computer %s revoked",
        computer_id,
        extra={"action": "computer_revoked", "computer_id": computer_id},
    )
    return {"computer": computer}


@router.post("/api/computers/{computer_id}/rotate")
async def rotate_key(computer_id: str, request: Request, db: DB, hub: HubDep) -> dict[str, Any]:
    """Give the computer a new key; the old one stops working (its sockets are closed)."""
    api_key = computers_store.new_api_key()
    computer = await db.write(computers_store.rotate_key, computer_id, api_key)
    hub.publish("computer_revoked", computer_id=computer_id)
    log.info(
        "computer %s got a new key",
        computer_id,
        extra={"action": "computer_key_rotated", "computer_id": computer_id},
    )
    return _with_key(computer, api_key, _server_url(request, None))


def _connected(conn: Connection, computer_id: str, body: Connect, daemon_id: str) -> dict[str, Any]:
    computer = computers_store.mark_seen(
        conn,
        computer_id,
        connected=True,
        platform=body.platform,
        version=body.version,
        runtimes=_runtimes(body.runtimes),
    )
    return {
        "computer": computer,
        "daemon_id": daemon_id,
        "agents": computers_store.assigned_agents(conn, computer_id),
    }


def _connect_answer(
    result: dict[str, Any], grace: float, *, legacy: bool = False
) -> dict[str, Any]:
    computer = result["computer"]
    log.info(
        "daemon %s of computer %s connected%s",
        result["daemon_id"],
        computer["id"],
        " (legacy)" if legacy else "",
        extra={
            "action": "daemon_connected",
            "computer_id": computer["id"],
            "daemon_id": result["daemon_id"],
        },
    )
    return {**result, "heartbeat_grace": grace, "lease_seconds": grace}


def _new_daemon_id(given: str | None) -> str:
    return given or "daemon_" + secrets.token_hex(8)


@router.post("/api/computers/connect")
async def connect(
    body: Connect, computer: CurrentComputer, db: DB, hub: HubDep, settings: SettingsDep
) -> dict[str, Any]:
    """A daemon starts: the computer is ``online``; the answer names the daemon and lists
    the agents assigned to the computer."""
    daemon_id = _new_daemon_id(body.daemon_id)
    result = await db.write(_connected, computer["id"], body, daemon_id)
    hub.publish("computer", computer_id=computer["id"], status="online")
    return _connect_answer(result, settings.heartbeat_grace)


@router.post("/api/computers/{computer_id}/heartbeat")
async def heartbeat(
    computer_id: str,
    body: Heartbeat,
    computer: CurrentComputer,
    db: DB,
    hub: HubDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Liveness, lease renewal, assignments and control requests, in one transaction.

    ``assignments_changed`` compares keys only: true when the keys assigned now differ
    from ``agents``. A changed agent (runtime, config) is signalled on the socket, and
    ``agents`` here always carries its current fields.
    """
    require_same(computer, computer_id)
    lease_until = utcnow() + timedelta(seconds=settings.heartbeat_grace)

    def write(conn: Connection) -> dict[str, Any]:
        seen = computers_store.mark_seen(conn, computer_id, runtimes=_runtimes(body.runtimes))
        deliveries_store.renew_leases(
            conn, computer_id=computer_id, daemon_id=body.daemon_id, until=lease_until
        )
        runs_store.renew_leases(
            conn, computer_id=computer_id, daemon_id=body.daemon_id, until=lease_until
        )
        assigned = computers_store.assigned_agents(conn, computer_id)
        return {
            "computer": seen,
            "assignments_changed": {a["key"] for a in assigned} != set(body.agents),
            "agents": assigned,
            "control_requests": run_actions_store.pending_for_computer(conn, computer_id),
            "lease_until": lease_until,
        }

    answer = await db.write(write)
    seen = answer["computer"]
    # Only a change is news (back online without a new connect, other runtimes found):
    # the workbench shows it live, and a plain heartbeat publishes nothing.
    if (seen["status"], seen["runtimes"]) != (computer["status"], computer["runtimes"]):
        hub.publish("computer", computer_id=computer_id, status=seen["status"])
    return answer


def _legacy(conn: Connection, body: LegacyRegister, daemon_id: str) -> dict[str, Any]:
    computer = computers_store.register_legacy(
        conn, body.computer_id, body.computer_secret, body.name
    )
    previous = None
    if body.agent is not None:
        agent = agents_store.find_agent(conn, body.agent)
        if agent is None:
            agents_store.upsert_agent(conn, body.agent, display_name=body.agent, runtime="codex")
        else:
            previous = agent["computer_id"]
        agents_store.assign_agent(conn, body.agent, computer["id"])
    return {**_connected(conn, computer["id"], body, daemon_id), "previous": previous}


def _announce_legacy(hub: Hub, agent: str | None, computer_id: str, previous: str | None) -> None:
    if agent is not None and previous != computer_id:
        hub.publish(
            "assignment", agent_key=agent, computer_id=computer_id, previous_computer_id=previous
        )


@router.post("/api/daemons")
async def register_daemon(
    body: LegacyRegister, db: DB, hub: HubDep, settings: SettingsDep
) -> dict[str, Any]:
    """Legacy daemons: register (first call) or check ``computer_id``/``computer_secret``,
    assign ``agent`` (created if missing) to the computer, then answer as connect does.
    The daemon then sends ``Authorization: Bearer <computer_id>:<computer_secret>``."""
    daemon_id = _new_daemon_id(body.daemon_id)
    result = await db.write(_legacy, body, daemon_id)
    _announce_legacy(hub, body.agent, body.computer_id, result.pop("previous"))
    return _connect_answer(result, settings.heartbeat_grace, legacy=True)
