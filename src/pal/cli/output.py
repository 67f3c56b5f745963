"""Printing for the command line: Rich tables for people, JSON for scripts, one-line errors.

Tables never cut values short: every column folds long values onto more lines. Values from
the server are wrapped in :class:`rich.text.Text`, so ``[brackets]`` or ``:emoji:`` in a
message print as written.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

MIN_FLEXIBLE_WIDTH = 12

EXIT_ERROR = 1
"""The server refused the request, or could not be reached."""
EXIT_USAGE = 2
"""The command line itself is wrong (Typer uses 2 for its own usage errors too)."""


def print_json(payload: object) -> None:
    """Print ``payload`` to stdout as indented JSON."""
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def print_error(message: str) -> None:
    """Print ``error: message`` as one line on stderr."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print the error line and exit with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def new_table(*headers: str, numeric: tuple[str, ...] = (), flexible: str | None = None) -> Table:
    """A borderless table; the ``numeric`` columns are right-aligned.

    The ``flexible`` column (long free text) takes the width the others leave on the line, so
    they keep their values on one line while it wraps; the table then spans the terminal.
    """
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        expand=flexible is not None,
    )
    for header in headers:
        table.add_column(
            header,
            overflow="fold",
            justify="right" if header in numeric else "left",
            ratio=1 if header == flexible else None,
            width=MIN_FLEXIBLE_WIDTH if header == flexible else None,
        )
    return table


def add_row(table: Table, *values: object) -> None:
    """Add a row; ``None`` prints as an empty cell, everything else as plain text."""
    table.add_row(*(Text("" if value is None else str(value)) for value in values))


def print_table(table: Table) -> None:
    """Print ``table`` to stdout."""
    Console(highlight=False).print(table)


def short_time(iso: str | None, *, now: datetime | None = None) -> str:
    """A server timestamp in local time: ``HH:MM:SS`` if it is today, else ``YYYY-MM-DD HH:MM``."""
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    today = (now or datetime.now().astimezone()).date()
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M")


def plural(count: int, noun: str) -> str:
    """``1 delivery``, ``2 deliveries``, ``0 memberships``."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"
