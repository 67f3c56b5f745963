"""(being written) The liveness sweep: silent computers go offline, their work is released."""

from __future__ import annotations

from pal.server.hub import Hub
from pal.store.db import Database


async def sweep_forever(db: Database, hub: Hub, grace: float) -> None:
    """Run the sweep every ``min(10, grace / 4)`` seconds until cancelled."""
