"""The liveness sweep: silent computers go offline and their work is released.

One sweep is one transaction, so nobody sees a computer ``offline`` that still holds claims
or ``running`` runs:

* every ``online`` computer last seen before ``now - grace`` becomes ``offline``; its claimed
  deliveries return to ``pending`` (holder cleared, attempt kept) and its ``running`` runs
  become ``lost``, with an error saying how long it was silent;
* any other claim whose lease ended before ``now`` (a dead daemon on a live computer)
  returns to ``pending``, and any other ``running`` run whose lease ended becomes ``lost``;
* claims and ``running`` runs still held by a computer whose key was revoked are released
  and lost the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.store import deliveries as deliveries_store
from pal.store import runs as runs_store
from pal.store.rows import as_dicts
from pal.store.tables import computers, deliveries, runs


def lost_error(silent_seconds: float) -> str:
    return (
        f"lost: its computer missed heartbeats for {silent_seconds:.0f} s "
        "(past PAL_HEARTBEAT_GRACE); the outcome is unknown"
    )


def sweep(conn: Connection, now: datetime, grace: float) -> dict[str, list[dict[str, Any]]]:
    """Run one sweep at ``now``. Returns ``{"offline": [{id, last_seen_at,
    silent_seconds}], "released": [{id, agent_key}], "lost": [{id, agent_key, room_id,
    computer_id}]}``."""
    cutoff = now - timedelta(seconds=grace)
    offline = as_dicts(
        conn.execute(
            computers.update()
            .where(
                computers.c.status == "online",
                sa.or_(computers.c.last_seen_at.is_(None), computers.c.last_seen_at < cutoff),
            )
            .values(status="offline")
            .returning(computers.c.id, computers.c.last_seen_at)
        )
    )
    offline.sort(key=lambda c: c["id"])
    ids = [c["id"] for c in offline]
    released = deliveries_store.release_claims_of(conn, ids, now)
    released += deliveries_store.release_expired_leases(conn, now)
    lost: list[dict[str, Any]] = []
    for computer in offline:
        seen = computer["last_seen_at"]
        computer["silent_seconds"] = (now - seen).total_seconds() if seen is not None else grace
        error = lost_error(computer["silent_seconds"])
        lost += runs_store.mark_lost(conn, [computer["id"]], error=error, now=now)
    # A revoked computer went offline at once, holding work nobody can report on any more.
    revoked = _revoked_holding_work(conn)
    released += deliveries_store.release_claims_of(conn, revoked, now)
    lost += runs_store.mark_lost(conn, revoked, error=REVOKED_ERROR, now=now)
    lost += runs_store.mark_expired_lost(conn, now)
    return {"offline": offline, "released": released, "lost": lost}


REVOKED_ERROR = "lost: its computer's API key was revoked; the outcome is unknown"


def _revoked_holding_work(conn: Connection) -> list[str]:
    """Revoked computers that still hold claims or ``running`` runs."""
    holds = sa.or_(
        sa.exists().where(runs.c.computer_id == computers.c.id, runs.c.status == "running"),
        sa.exists().where(
            deliveries.c.computer_id == computers.c.id, deliveries.c.status == "claimed"
        ),
    )
    query = (
        sa.select(computers.c.id)
        .where(computers.c.revoked_at.is_not(None), holds)
        .order_by(computers.c.id)
    )
    return list(conn.execute(query).scalars())
