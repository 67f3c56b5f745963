"""Request dependencies: the store, the hub and the settings of the running app.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
which would cost two thread hops per request for a dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pal.config import Settings
from pal.server.hub import Hub
from pal.store.db import Database


async def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DB = Annotated[Database, Depends(_db)]
HubDep = Annotated[Hub, Depends(_hub)]
SettingsDep = Annotated[Settings, Depends(_settings)]
