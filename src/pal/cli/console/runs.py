"""Runs: ``runs`` lists them and ``run-action`` asks a run's daemon to kill or restart it
(``pal console`` and ``pal cli`` alike)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import Run, RunActionName, RunStatus


def runs(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """List runs, newest first: who ran, where, for how long, and how it ended."""
    client = connect(ctx)
    payload = client.list_runs(agent=agent, status=status, limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["runs"]:
        typer.echo("no runs")
        return
    rooms = {room["id"]: room["name"] for room in client.list_rooms()["rooms"]}
    table = output.new_table(
        "ID", "Agent", "Status", "Room", "Computer", "Started", "Duration", numeric=("ID",)
    )
    now = datetime.now(UTC)
    for run in payload["runs"]:
        output.add_row(
            table,
            run["id"],
            run["agent_key"],
            _status(run),
            rooms.get(run["room_id"], run["room_id"]),
            run["computer_id"],
            output.short_time(run["started_at"]),
            duration(run, now=now),
        )
    output.print_table(table)


def run_action(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", min=1, help="Run id.")],
    action: Annotated[RunActionName, typer.Argument(metavar="ACTION", help="kill or restart.")],
    as_json: AsJson = False,
) -> None:
    """Kill a running run, or restart it (kill, then a fresh run for the same message).

    The request reaches the run's daemon over its socket or in its next heartbeat.
    """
    payload = connect(ctx).run_action(run_id, action)
    if as_json:
        output.print_json(payload)
        return
    recorded = payload["action"]
    typer.echo(
        f"{recorded['action']} requested for run {recorded['run_id']} "
        f"(action {recorded['id']}, {recorded['status']})"
    )


def _status(run: Run) -> str:
    return f"{run['status']} (dry run)" if run["dry_run"] else run["status"]


def duration(run: Run, *, now: datetime) -> str:
    """How long the run ran (until now while it runs): ``42s``, ``3m05s``, ``2h07m``."""
    try:
        start = datetime.fromisoformat(run["started_at"])
        end = datetime.fromisoformat(run["finished_at"]) if run["finished_at"] else now
    except (TypeError, ValueError):
        return ""
    if run["finished_at"] is None and run["status"] != "running":
        return ""
    seconds = max(0, int((end - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
