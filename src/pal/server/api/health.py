"""GET /health, and the JSON index that ``GET /`` answers to API clients (pal.server.web)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

import pal
from pal.server.deps import DB
from pal.server.responses import ORJSONResponse

router = APIRouter(tags=["health"])


def _ping(conn: Any) -> int:
    return int(conn.exec_driver_sql("SELECT 1").scalar_one())


def index() -> dict[str, Any]:
    """Where to go from here: the workbench, the API description and its interactive docs."""
    return {
        "name": "pal",
        "version": pal.__version__,
        "health": "/health",
        "openapi": "/openapi.json",
        "docs": "/docs",
    }


@router.get("/health")
async def health(request: Request, db: DB) -> ORJSONResponse:
    """Liveness and database reachability; on PostgreSQL, ``replicas.listening`` says
    whether this process hears the other server processes' events (server/replicas.py)."""
    await db.read(_ping)
    answer: dict[str, Any] = {"ok": True, "version": pal.__version__, "database": db.dialect}
    replicas = getattr(request.app.state, "replicas", None)
    if replicas is not None:
        answer["replicas"] = {"listening": replicas.listening}
    return ORJSONResponse(answer)
