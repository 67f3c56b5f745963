"""The digest sweep task: periodic members get their digest deliveries.

Every sweep reads the periodic members whose period has passed and who have something new
(:func:`pal.store.digests.find_due`: one indexed read, and nothing else, when nobody is
periodic), makes their digests in one write transaction (only when someone is due), and
publishes a ``delivery`` event per digest, so the daemon of the member's computer wakes and
claims it at once. Sweeps run every :data:`SWEEP_INTERVAL` seconds, or every half of the
shortest digest period in use when that is shorter, so a digest comes at most that late.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from pal.server.hub import Hub
from pal.store import digests as digests_store
from pal.store.db import Database
from pal.store.tables import utcnow

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 5.0
"""Seconds between digest sweeps (at most)."""


def next_sweep(shortest_period: int | None, interval: float = SWEEP_INTERVAL) -> float:
    """Seconds until the next sweep, given the shortest digest period in use."""
    if shortest_period is None:
        return interval
    return min(interval, shortest_period / 2)


async def sweep_once(
    db: Database, hub: Hub, now: datetime | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """One sweep at ``now`` (default: the current time): the digest deliveries it made, and
    the shortest digest period in use (None: no periodic member)."""
    now = now or utcnow()
    due = await db.read(digests_store.find_due, now)
    made: list[dict[str, Any]] = []
    if due.members:
        made = await db.write(digests_store.make_digests, due.members, now)
    for delivery in made:
        log.info(
            "digest for %s in room %s: messages %d..%d (delivery %d)",
            delivery["agent_key"],
            delivery["room_id"],
            delivery["digest_after"] + 1,
            delivery["message_id"],
            delivery["id"],
            extra={
                "action": "digest_made",
                "agent_key": delivery["agent_key"],
                "room_id": delivery["room_id"],
                "delivery_id": delivery["id"],
            },
        )
        hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    log.debug(
        "digest sweep: %d due, %d made",
        len(due.members),
        len(made),
        extra={"action": "digest_sweep", "due": len(due.members), "made": len(made)},
    )
    return made, due.shortest_period


async def digest_forever(db: Database, hub: Hub, interval: float = SWEEP_INTERVAL) -> None:
    """Sweep until cancelled: every ``interval`` seconds, or every half of the shortest
    digest period in use when that is shorter. A failed sweep is logged and the next one
    runs on schedule."""
    wait = interval
    while True:
        await asyncio.sleep(wait)
        try:
            _, shortest = await sweep_once(db, hub)
            wait = next_sweep(shortest, interval)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("digest sweep failed", extra={"action": "digest_sweep_failed"})
