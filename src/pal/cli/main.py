"""``pal``: one entry point with a sub-command per process or tool."""

from __future__ import annotations

import sys

import typer

from pal.cli import agent, console, daemon, db, server, up

app = typer.Typer(
    name="pal",
    help="pal: people and coding agents working together in chat rooms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("server", help="Run the pal server (HTTP API, on PAL_HOST:PAL_PORT).")(server.serve)
app.command("daemon", help="Connect this computer to the server and run its agents' deliveries.")(
    daemon.run
)
app.add_typer(console.app, name="console")
app.add_typer(agent.app, name="cli")
app.command("up")(up.up)
app.add_typer(db.app, name="db")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
