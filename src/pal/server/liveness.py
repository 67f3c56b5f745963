"""The liveness sweep task: silent computers go offline, their work is released.

Every ``min(10, grace / 4)`` seconds the server runs :func:`pal.store.liveness.sweep`, then
tells everyone what changed: a ``delivery`` event per released claim (connected daemons
claim it again), a ``computer`` event per computer marked offline and a ``run`` event per
lost run. So a silent computer is noticed within grace + one sweep period.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from pal.server.errors import database_reason
from pal.server.hub import Hub
from pal.store import liveness as liveness_store
from pal.store.db import Database
from pal.store.tables import utcnow

log = logging.getLogger(__name__)

MAX_PERIOD = 10.0


def period(grace: float) -> float:
    """Seconds between sweeps."""
    return min(MAX_PERIOD, grace / 4)


def publish(hub: Hub, summary: dict[str, list[dict[str, Any]]]) -> None:
    """Publish the events of one sweep's ``summary``."""
    for computer in summary["offline"]:
        hub.publish("computer", computer_id=computer["id"], status="offline")
    for delivery in summary["released"]:
        hub.publish("delivery", agent_key=delivery["agent_key"], delivery_id=delivery["id"])
    for run in summary["lost"]:
        hub.publish(
            "run",
            run_id=run["id"],
            status="lost",
            agent_key=run["agent_key"],
            room_id=run["room_id"],
        )


async def sweep_once(db: Database, hub: Hub, grace: float) -> dict[str, list[dict[str, Any]]]:
    """One sweep now, with its events and log lines."""
    summary = await db.write(liveness_store.sweep, utcnow(), grace)
    for computer in summary["offline"]:
        lost = [r["id"] for r in summary["lost"] if r["computer_id"] == computer["id"]]
        log.info(
            "computer %s is offline: no heartbeat for %.0f s; %d run(s) lost",
            computer["id"],
            computer["silent_seconds"],
            len(lost),
            extra={"action": "computer_offline", "computer_id": computer["id"], "runs": lost},
        )
    if summary["released"]:
        log.info(
            "%d claim(s) returned to pending",
            len(summary["released"]),
            extra={
                "action": "claims_released",
                "deliveries": [d["id"] for d in summary["released"]],
            },
        )
    publish(hub, summary)
    return summary


async def sweep_forever(db: Database, hub: Hub, grace: float) -> None:
    """Run the sweep every ``min(10, grace / 4)`` seconds until cancelled. A failed sweep is
    logged and the next one runs on schedule."""
    while True:
        await asyncio.sleep(period(grace))
        try:
            await sweep_once(db, hub, grace)
        except asyncio.CancelledError:
            raise
        except OperationalError as exc:  # the database is down, full or read-only
            reason = database_reason(exc)
            log.error("liveness sweep failed: %s", reason, extra={"action": "sweep_failed"})
        except Exception:
            log.exception("liveness sweep failed", extra={"action": "sweep_failed"})
