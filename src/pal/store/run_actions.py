"""Run actions: a kill or restart requested for a run, carried to its computer's daemon.

Statuses: ``pending`` (not yet handed to the daemon) → ``sent`` (in a heartbeat answer or
socket hint) → ``done`` | ``failed`` (the daemon reports it). A ``sent`` action is repeated
in every heartbeat until the daemon reports it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import Conflict, NotFound
from pal.store import runs as runs_store
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import run_actions, utcnow

ACTIONS = ("kill", "restart")
STATUSES = ("pending", "sent", "done", "failed")
OPEN = ("pending", "sent")
FINAL = ("done", "failed")


class ActionNotFound(NotFound):
    def __init__(self, run_id: int, action_id: int) -> None:
        super().__init__("run action", action_id)
        self.message = f"run {run_id} has no action {action_id}"
        self.args = (self.message,)


def request_action(
    conn: Connection, run_id: int, action: str, requested_by: str | None
) -> dict[str, Any]:
    """Record a kill or restart of a ``running`` run (:class:`Conflict` otherwise). An open
    request of the same kind is answered instead of a second one (the run's row is locked
    meanwhile, so two requests at once make one action)."""
    run = runs_store.get_run(conn, run_id, lock=True)
    if run["status"] != "running":
        raise Conflict(f"run {run_id} is {run['status']}: only a running run can be {action}ed")
    for existing in list_for_run(conn, run_id):
        if existing["action"] == action and existing["status"] in OPEN:
            return existing
    return _create(
        conn,
        run_id=run_id,
        computer_id=run["computer_id"],
        action=action,
        requested_by=requested_by,
    )


def _create(
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


def complete_action(
    conn: Connection,
    run_id: int,
    action_id: int,
    *,
    computer_id: str,
    status: str,
    error: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """The daemon of ``computer_id`` reports how action ``action_id`` of its run ``run_id``
    ended (``done`` or ``failed``, with ``error``). Returns ``(action, changed)``.

    The same status reported again answers the action as it is; a different one is
    :class:`Conflict`. An action of another run is :class:`NotFound`, another computer's
    run :class:`Forbidden`. The action's row is locked, so two reports at once take turns.
    """
    runs_store.owned_run(conn, run_id, computer_id)
    row = conn.execute(
        sa.select(run_actions)
        .where(run_actions.c.id == action_id, run_actions.c.run_id == run_id)
        .with_for_update()
    ).first()
    if row is None:
        raise ActionNotFound(run_id, action_id)
    action = as_dict(row)
    if action["status"] in FINAL:
        if action["status"] == status:
            return action, False
        raise Conflict(
            f"action {action_id} ({action['action']}) of run {run_id} was already reported "
            f"{action['status']}; reporting it {status} now is refused"
        )
    values = {"status": status, "error": error, "updated_at": utcnow()}
    conn.execute(run_actions.update().where(run_actions.c.id == action_id).values(**values))
    return {**action, **values}, True
