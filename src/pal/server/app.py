"""The app factory: ``create_app(settings)`` assembles routers, error handlers and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

import pal
from pal.admin_token import ensure_token
from pal.config import Settings, ensure_home
from pal.lark.bridge import bridged_manager
from pal.lark.manager import LarkManager
from pal.server import access, artifact_files, digests, errors, liveness, openapi, web
from pal.server.api import (
    agents,
    artifacts,
    computers,
    daemon_ws,
    debates,
    deliveries,
    events,
    health,
    messages,
    rooms,
    runs,
    sessions,
)
from pal.server.api import lark as lark_api
from pal.server.auth_failures import AuthFailures
from pal.server.hub import Hub
from pal.server.middleware import DefaultJSONContentType
from pal.server.replicas import Replicas
from pal.server.responses import ORJSONResponse
from pal.store import migrate
from pal.store import rooms as rooms_store
from pal.store.db import Database, open_database

log = logging.getLogger(__name__)

# Routers are matched in order: the health check and message posts and reads come first.
ROUTERS = (
    health.router,
    messages.router,
    rooms.router,
    agents.router,
    deliveries.router,
    computers.router,
    daemon_ws.router,
    runs.router,
    sessions.router,
    artifacts.router,
    debates.router,
    lark_api.router,
    events.router,
    web.router,
)


def open_store(settings: Settings) -> Database:
    """Create PAL_HOME (for SQLite), migrate PAL_DB to head and open it."""
    if settings.is_sqlite:
        ensure_home(settings.home)
    migrate.upgrade(settings.db_url)
    return open_database(settings.db_url)


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    admin_token: str | None = None,
    lark_manager: Callable[[Settings, Database, Hub], LarkManager] = bridged_manager,
) -> FastAPI:
    """Build the server. Without ``database``, the lifespan opens (and closes) the store;
    without ``admin_token``, it reads (or creates) the token file (server/access.py);
    ``lark_manager`` builds the Lark bots' manager (``app.state.lark``; by default with the
    bridge between Lark chats and rooms, ``pal.lark.bridge``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.admin_token = admin_token or ensure_token(settings)
        db = database or open_store(settings)
        await db.write(rooms_store.ensure_room, rooms_store.DEFAULT_ROOM)
        app.state.db = db
        # several server processes may share a PostgreSQL database: join their hubs
        if db.dialect == "postgresql":
            app.state.replicas = await Replicas.start(app.state.hub, db)
        app.state.lark = lark_manager(settings, db, app.state.hub)
        await app.state.lark.start()  # a bad lark.json is logged; Lark stays off
        sweeper = asyncio.create_task(
            liveness.sweep_forever(db, app.state.hub, settings.heartbeat_grace)
        )
        cleaner = asyncio.create_task(artifact_files.cleanup_forever(db, settings, app.state.hub))
        digester = asyncio.create_task(
            digests.digest_forever(db, app.state.hub, digests.SWEEP_INTERVAL)
        )
        log.info("pal server ready (%s)", db.dialect, extra={"action": "server_ready"})
        try:
            yield
        finally:
            await app.state.lark.stop()
            if app.state.replicas is not None:
                await app.state.replicas.stop()
            app.state.hub.close()  # ends the event streams still open
            sweeper.cancel()
            cleaner.cancel()
            digester.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
            with contextlib.suppress(asyncio.CancelledError):
                await digester
            if database is None:
                db.close()

    app = FastAPI(
        title="pal",
        version=pal.__version__,
        summary="People and coding agents working together in chat rooms.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        # FastAPI's built-in OpenTelemetry hooks look up providers on every request; pal does
        # not export telemetry, so they are switched off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.hub = Hub()
    app.state.auth_failures = AuthFailures()  # failed authentication, per client address
    app.state.replicas = None
    app.add_middleware(DefaultJSONContentType)
    app.add_middleware(access.AdminAuth)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    web.install(app)
    openapi.install(app)
    return app
