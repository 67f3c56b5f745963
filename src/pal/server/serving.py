"""uvicorn as ``pal server`` runs it."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from pal.server.hub import Hub


class StreamEndingServer(uvicorn.Server):
    """uvicorn that also ends the live event streams when asked to stop: it waits for open
    responses to finish, and an event stream (``GET /api/events``) never does by itself."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self._hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._hub.close)
        super().handle_exit(sig, frame)
