"""Run actions: a kill or restart requested for a run, carried to its computer's daemon.

Statuses: ``pending`` (not yet handed to the daemon) → ``sent`` (in a heartbeat answer or
socket hint) → ``done`` | ``failed`` (the daemon reports it). A ``sent`` action is repeated
in every heartbeat until the daemon reports it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import run_actions, utcnow

ACTIONS = ("kill", "restart")
STATUSES = ("pending", "sent", "done", "failed")
OPEN = ("pending", "sent")


def create_action(
    conn: Connection,
    *,
    run_id: int,
    computer_id: str | None,
    action: str,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Record a pending ``action`` (kill or restart) for ``run_id``."""
    now = utcnow()
    row = {
        "run_id": run_id,
        "computer_id": computer_id,
        "action": action,
        "status": "pending",
        "requested_by": requested_by,
        "error": None,
        "created_at": now,
        "updated_at": now,
    }
    action_id = conn.execute(
        run_actions.insert().values(**row).returning(run_actions.c.id)
    ).scalar_one()
    return {"id": action_id, **row}


def get_action(conn: Connection, action_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(run_actions).where(run_actions.c.id == action_id)).first()
    if row is None:
        raise NotFound("run action", action_id)
    return as_dict(row)


def list_for_run(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """Every action requested for ``run_id``, oldest first."""
    query = sa.select(run_actions).where(run_actions.c.run_id == run_id).order_by(run_actions.c.id)
    return as_dicts(conn.execute(query))


def pending_for_computer(conn: Connection, computer_id: str) -> list[dict[str, Any]]:
    """The open (``pending`` or ``sent``) actions for ``computer_id``'s runs, oldest first,
    as heartbeat ``control_requests``; the pending ones are marked ``sent``."""
    query = (
        sa.select(
            run_actions.c.id,
            run_actions.c.run_id,
            run_actions.c.action,
            run_actions.c.status,
            run_actions.c.created_at,
        )
        .where(run_actions.c.computer_id == computer_id, run_actions.c.status.in_(OPEN))
        .order_by(run_actions.c.id)
    )
    found = as_dicts(conn.execute(query))
    fresh = [a["id"] for a in found if a["status"] == "pending"]
    if fresh:
        conn.execute(
            run_actions.update()
            .where(run_actions.c.id.in_(fresh), run_actions.c.status == "pending")
            .values(status="sent", updated_at=utcnow())
        )
        for a in found:
            if a["status"] == "pending":
                a["status"] = "sent"
    return found
