"""The daemon socket: ``GET /api/daemon/ws``, wake-up hints for one computer's daemon.

Hints carry ids only; the daemon reads the rest over HTTP, and drains pending work on every
reconnect and heartbeat, so a lost hint delays work but never loses it. Frames:
``hello`` on open; ``deliveries`` (per agent) for pending deliveries of agents assigned to
the computer; ``assignments`` when an agent is assigned to it, removed from it or changed;
``run_action`` for kill and restart requests; ``resync`` when this socket fell behind the
hub and lost hints. A revoked or rotated key closes the socket with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from pal.errors import PalError
from pal.server.auth import authenticate
from pal.server.hub import Hub
from pal.server.responses import ORJSONResponse
from pal.store import computers as computers_store
from pal.store.db import Database

log = logging.getLogger(__name__)

router = APIRouter(tags=["daemon"])

DAEMON_ID = re.compile(r"^daemon_[A-Za-z0-9]{1,56}$")
CLOSE_REVOKED = 4401

Event = dict[str, Any]


class _DenialNoise(logging.Filter):
    """Drop uvicorn's spurious ERROR after a handshake refused with a denial response: its
    websockets-sansio protocol never marks that handshake complete
    (https://github.com/Kludex/uvicorn/pull/3138). The client gets the 401 as meant."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


if not any(isinstance(f, _DenialNoise) for f in logging.getLogger("uvicorn.error").filters):
    logging.getLogger("uvicorn.error").addFilter(_DenialNoise())


class Revoked(Exception):
    """The computer's key was revoked or rotated while the socket was open."""


async def _refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with an HTTP answer (close code ``4000 + status`` where the
    server cannot send one)."""
    response = ORJSONResponse({"error": message}, status_code=status)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(4000 + status, message[:120])


async def _still_valid(websocket: WebSocket, computer_id: str) -> bool:
    """Whether the socket's credential still names ``computer_id`` (not revoked or
    rotated)."""
    try:
        computer = await authenticate(websocket)
    except PalError:
        return False
    return bool(computer["id"] == computer_id)


async def _assigned_keys(db: Database, computer_id: str) -> set[str]:
    agents = await db.read(computers_store.assigned_agents, computer_id)
    return {a["key"] for a in agents}


def hints(events: list[Event | None], computer_id: str, keys: set[str]) -> list[dict[str, Any]]:
    """The frames for a batch of hub events, in a fixed order: ``resync``, ``assignments``,
    ``deliveries`` (one per agent), ``run_action``. Updates ``keys`` (the computer's
    assigned agents) on assignment events; raises :class:`Revoked` for this computer."""
    resync = assignments = False
    deliveries: dict[str, list[int]] = {}
    actions: list[int] = []
    for event in events:
        if event is None:
            resync = True
            continue
        kind = event["kind"]
        if kind == "delivery":
            if event["agent_key"] in keys:
                deliveries.setdefault(event["agent_key"], []).append(event["delivery_id"])
        elif kind == "assignment":
            if computer_id in (event.get("computer_id"), event.get("previous_computer_id")):
                assignments = True
                if event.get("computer_id") == computer_id:
                    keys.add(event["agent_key"])
                else:
                    keys.discard(event["agent_key"])
        elif kind == "run_action":
            if event.get("computer_id") == computer_id:
                actions.extend(event.get("ids") or [event["action_id"]])
        elif kind == "computer_revoked" and event.get("computer_id") == computer_id:
            raise Revoked
    frames: list[dict[str, Any]] = []
    if resync:
        frames.append({"type": "resync"})
    if assignments:
        frames.append({"type": "assignments"})
    frames += [{"type": "deliveries", "agent": k, "ids": ids} for k, ids in deliveries.items()]
    if actions:
        frames.append({"type": "run_action", "ids": actions})
    return frames


# The hub events a daemon socket turns into hints (run output and the like never wake it).
HINT_EVENTS = frozenset({"delivery", "assignment", "run_action", "computer_revoked"})


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the daemon sends until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _next_batch(
    queue: asyncio.Queue[Event | None], closed: asyncio.Task[None]
) -> list[Event | None] | None:
    """The events queued now (waiting for at least one), or None once the daemon left."""
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if closed.done() or getter.cancelled():
        return None
    batch = [getter.result()]
    while batch[-1] is not None and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


async def _serve(websocket: WebSocket, hub: Hub, db: Database, daemon_id: str | None) -> str | None:
    """Authenticate, accept and send hints until the daemon leaves (returns the computer
    id, or None when the handshake was refused).

    Subscribed before the credential check, so a revoke that lands just after the check
    still closes the socket. After an overflow (the hub dropped this subscriber) it
    subscribes again, checks the credential again (a revoke may have been among the lost
    events) and reloads the assignments before sending ``resync``.
    """
    with contextlib.ExitStack() as subscription:
        queue = subscription.enter_context(hub.subscribe(HINT_EVENTS))
        try:
            computer = await authenticate(websocket)
        except PalError as exc:
            await _refuse(websocket, exc.status, exc.message)
            return None
        computer_id: str = computer["id"]
        keys = await _assigned_keys(db, computer_id)
        await websocket.accept()
        log.info(
            "daemon %s of computer %s opened its socket",
            daemon_id,
            computer_id,
            extra={"action": "daemon_socket_open", "computer_id": computer_id},
        )
        await websocket.send_json(
            {"type": "hello", "computer_id": computer_id, "daemon_id": daemon_id}
        )
        closed = asyncio.create_task(_until_closed(websocket))
        try:
            while True:
                batch = await _next_batch(queue, closed)
                if batch is None:
                    break
                try:
                    frames = hints(batch, computer_id, keys)
                except Revoked:
                    await websocket.close(CLOSE_REVOKED, "the computer key was revoked or rotated")
                    break
                if batch[-1] is None:
                    subscription.close()
                    queue = subscription.enter_context(hub.subscribe(HINT_EVENTS))
                    # a revoke or rotation may be among the lost events: check the key again
                    if not await _still_valid(websocket, computer_id):
                        await websocket.close(
                            CLOSE_REVOKED, "the computer key was revoked or rotated"
                        )
                        break
                    keys = await _assigned_keys(db, computer_id)
                for frame in frames:
                    await websocket.send_json(frame)
        except WebSocketDisconnect:
            pass  # the daemon went away while we were sending
        finally:
            closed.cancel()
            await asyncio.wait({closed})
            if not closed.cancelled():
                closed.exception()  # retrieved: a failed read only ends the socket
        return computer_id


@router.websocket("/api/daemon/ws")
async def daemon_socket(websocket: WebSocket, daemon_id: str | None = None) -> None:
    """Wake-up hints for the calling computer's daemon (see the module docstring). The
    handshake needs the computer's credential (401 otherwise)."""
    if daemon_id is not None and not DAEMON_ID.match(daemon_id):
        await _refuse(websocket, 422, "daemon_id must be 'daemon_' and 1-56 letters or digits")
        return
    hub: Hub = websocket.app.state.hub
    db: Database = websocket.app.state.db
    computer_id = await _serve(websocket, hub, db, daemon_id)
    if computer_id is not None:
        log.info(
            "daemon %s of computer %s closed its socket",
            daemon_id,
            computer_id,
            extra={"action": "daemon_socket_closed", "computer_id": computer_id},
        )
