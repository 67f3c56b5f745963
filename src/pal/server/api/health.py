"""GET /health, and the JSON index that ``GET /`` answers to API clients (pal.server.web)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

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
async def health(db: DB) -> ORJSONResponse:
    """Liveness and database reachability."""
    await db.read(_ping)
    return ORJSONResponse({"ok": True, "version": pal.__version__, "database": db.dialect})
