"""Lark: the bots' status and reload, the events they received, sending through a bot, and
the Lark users allowed to reach agents. Admin-only (server/access.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from pal.errors import PalError
from pal.lark.manager import LarkManager
from pal.server.api.fields import Body, Limit
from pal.server.deps import DB
from pal.server.openapi import UPDATED
from pal.store import lark as lark_store

router = APIRouter(tags=["lark"])

AppId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
UserId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="the sender's union_id (on_..., the same in every bot), open_id (ou_...) "
        "or user_id",
        examples=["on_1a2b3c"],
    ),
]
UserName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"\S")]
ToType = Literal["chat_id", "open_id", "union_id", "email", "user_id"]


class LarkFailed(PalError):
    """Lark refused the call, or could not be reached (502)."""

    status = 502


async def _manager(request: Request) -> LarkManager:
    manager: LarkManager = request.app.state.lark
    return manager


Lark = Annotated[LarkManager, Depends(_manager)]


class LarkSend(Body):
    app_id: AppId
    to: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]
    to_type: ToType = "chat_id"
    text: Annotated[str, Field(min_length=1, max_length=30_000, pattern=r"\S")]


class LarkUserAdd(Body):
    user_id: UserId
    name: UserName


@router.get("/api/lark")
async def lark_status(lark: Lark) -> dict[str, Any]:
    """The bots of lark.json with their connection state (secrets redacted), and why the file
    was refused, if it was."""
    return lark.status()


@router.post("/api/lark/reload")
async def reload_lark(lark: Lark) -> dict[str, Any]:
    """Read lark.json again and apply it; an invalid file is a 422 and the running bots are
    kept."""
    return await lark.reload()


@router.get("/api/lark/events")
async def lark_events(
    db: DB,
    app_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")] = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    """Events the bots received, newest first (the newest 1000 per bot are kept)."""
    events = await db.read(lambda conn: lark_store.list_events(conn, app_id=app_id, limit=limit))
    return {"events": events}


@router.post(
    "/api/lark/send",
    responses={502: {"description": "Lark refused the message or could not be reached"}},
)
async def lark_send(body: LarkSend, lark: Lark) -> dict[str, Any]:
    """Send a text message through a bot (404 for a bot not in lark.json; 502 with Lark's
    code and message when Lark refuses)."""
    rest = lark.rest(body.app_id)
    try:
        message = await rest.send(body.to, body.to_type, body.text)
    except Exception as exc:
        from pal.lark.rest import LarkApiError, LarkUnreachable  # lazily, like the bots

        if isinstance(exc, LarkApiError):
            raise LarkFailed(
                f"Lark refused the message (code {exc.code}: {exc.msg}); check --to and "
                f"--to-type, and that bot {body.app_id} is in that chat"
            ) from None
        if isinstance(exc, LarkUnreachable):
            raise LarkFailed(f"Lark could not be reached from the server: {exc}") from None
        raise
    return {"message": message}


@router.get("/api/lark-users")
async def list_lark_users(db: DB) -> dict[str, Any]:
    """The Lark users whose messages reach agents."""
    return {"users": await db.read(lark_store.list_lark_users)}


@router.post("/api/lark-users", status_code=201, responses=UPDATED)
async def add_lark_user(body: LarkUserAdd, db: DB, response: Response) -> dict[str, Any]:
    """Authorize a Lark user (201), or rename one already authorized (200)."""
    user, created = await db.write(lark_store.add_lark_user, body.user_id, body.name.strip())
    response.status_code = 201 if created else 200
    return {"user": user, "created": created}


@router.delete("/api/lark-users/{user_id}")
async def delete_lark_user(user_id: Annotated[str, Path(max_length=100)], db: DB) -> dict[str, Any]:
    """Stop authorizing a Lark user (404 if not authorized)."""
    return {"user": await db.write(lark_store.delete_lark_user, user_id)}
