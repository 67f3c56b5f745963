"""Runs: ``runs`` lists them or prints one run's output (``--output``, ``--follow``), and
``run-action`` asks a run's daemon to kill or restart it (``pal console`` and ``pal cli``
alike)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, BinaryIO

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import OutputChunk, Run, RunActionName, RunOutput, RunStatus, ServerClient

PAGE = 1000
"""Output chunks asked for per request."""
POLL_INTERVAL = 0.5
"""Seconds between two looks at a followed run that has no new output."""


def runs(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    output_of: Annotated[
        int | None,
        typer.Option(
            "--output", metavar="RUN_ID", min=1, help="Print this run's stored output and exit."
        ),
    ] = None,
    follow: Annotated[
        int | None,
        typer.Option(
            "--follow",
            metavar="RUN_ID",
            min=1,
            help="Print this run's output as it comes until the run ends; exit 1 unless it "
            "completed.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List runs, newest first: who ran, where, for how long, how it ended, tokens used.

    With --output or --follow RUN_ID, print that run's output instead: its stdout to stdout
    and its stderr to stderr, as the run wrote them (with --json: the chunks as JSON).
    """
    if output_of is not None and follow is not None:
        output.fail("--output and --follow cannot be combined: pick one", output.EXIT_USAGE)
    client = connect(ctx)
    if output_of is not None:
        show_output(client, output_of, as_json=as_json)
        return
    if follow is not None:
        raise typer.Exit(follow_output(client, follow, as_json=as_json))
    payload = client.list_runs(agent=agent, status=status, limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["runs"]:
        typer.echo("no runs")
        return
    rooms = {room["id"]: room["name"] for room in client.list_rooms()["rooms"]}
    table = output.new_table(
        "ID", "Agent", "Status", "Room", "Computer", "Started", "Duration", "Usage", numeric=("ID",)
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
            usage(run),
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


def _count(n: float) -> str:
    """A token count in a few characters: ``340``, ``1.2k``, ``123k``, ``4.5M``."""
    if n < 1000:
        return f"{n:g}"
    if n < 100_000:
        return f"{n / 1000:.1f}k"
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M"


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def usage(run: Run) -> str:
    """The run's token usage and cost: ``in 1.2k / out 340, $0.03`` (empty when unknown)."""
    used = run.get("usage")
    if not isinstance(used, dict):
        return ""
    tokens = [
        f"{label} {_count(n)}"
        for label, key in (("in", "input_tokens"), ("out", "output_tokens"))
        if (n := _number(used.get(key))) is not None
    ]
    total = _number(used.get("total_tokens"))
    parts = [" / ".join(tokens)] if tokens else [f"{_count(total)} tokens"] if total else []
    cost = _number(used.get("cost_usd"))
    if cost is not None:
        parts.append(f"${cost:.2f}" if cost >= 0.01 or cost == 0 else f"${cost:.4f}")
    return ", ".join(parts)


# -- output ----------------------------------------------------------------------------------


def _pages(client: ServerClient, run_id: int, after: int = -1) -> Iterator[RunOutput]:
    """Every page of the run's output after ``after`` that is there now."""
    while True:
        page = client.run_output(run_id, after=after, limit=PAGE)
        yield page
        if not page["more"]:
            return
        after = page["next_after"]


class _Printer:
    """Writes chunks raw: stdout chunks to stdout, stderr chunks to stderr (as UTF-8 bytes,
    so nothing is re-encoded or read as markup), or each chunk as a JSON line with
    ``as_json``. A gap in the seqs (output trimmed by the server's bound, or lost on the
    way) is said on stderr."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.expected = 0

    def write(self, chunk: OutputChunk) -> None:
        if chunk["seq"] > self.expected:
            missing = chunk["seq"] - self.expected
            self.note(f"{output.plural(missing, 'chunk')} of earlier output not kept")
        self.expected = chunk["seq"] + 1
        if self.as_json:
            self._put("stdout", json.dumps(chunk, ensure_ascii=False) + "\n")
        else:
            self._put(chunk["stream"], chunk["data"])

    def note(self, text: str) -> None:
        self._put("stderr", f"[pal: {text}]\n")

    @staticmethod
    def _put(stream: str, text: str) -> None:
        target = sys.stderr if stream == "stderr" else sys.stdout
        buffer: BinaryIO | None = getattr(target, "buffer", None)
        if buffer is None:
            target.write(text)
        else:
            target.flush()  # whatever was written as text goes first
            buffer.write(text.encode("utf-8", "replace"))
            buffer.flush()
        target.flush()


def show_output(client: ServerClient, run_id: int, *, as_json: bool) -> None:
    """Print the output the server keeps for ``run_id``; with ``as_json``, one JSON answer
    holding every chunk."""
    pages = list(_pages(client, run_id))
    if as_json:
        last = pages[-1]
        chunks = [c for page in pages for c in page["chunks"]]
        output.print_json({**last, "chunks": chunks})
        return
    printer = _Printer(as_json=False)
    for page in pages:
        for chunk in page["chunks"]:
            printer.write(chunk)


def follow_output(client: ServerClient, run_id: int, *, as_json: bool) -> int:
    """Print the run's output, then new output as it comes (a look every
    :data:`POLL_INTERVAL` seconds), until the run has finished and everything is printed.
    Returns the exit status: 0 when the run completed, 1 otherwise (130 on Ctrl-C)."""
    printer = _Printer(as_json=as_json)
    after = -1
    try:
        while True:
            for page in _pages(client, run_id, after):
                for chunk in page["chunks"]:
                    printer.write(chunk)
                after = page["next_after"]
            # the server reads the run before its output: once it shows the run finished,
            # the page holds all the output the daemon sent before finishing it
            status = page["run"]["status"]
            if status != "running":
                return 0 if status == "completed" else 1
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        return 130
