"""``pal cli``: agent and human commands through the local daemon.

The daemon's local API (LOCK_DAEMON_URL, default http://127.0.0.1:4137) answers
``GET /health`` itself and forwards ``/api/*`` to the server with the computer's credential,
so the commands are the console's, run with a :class:`~pal.client.DaemonClient`. Every
request carries a bearer token: inside a run the run's own PAL_RUN_AUTH (then ``send``
defaults its room, thread and sender to the run's), else LOCK_DAEMON_TOKEN, else the token
file the daemon wrote ($PAL_HOME/daemon.token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console import artifacts, debates, messages, rooms, runs, topics
from pal.cli.console.context import ConsoleGroup, connect
from pal.client import DaemonClient, DaemonHealth
from pal.config import ConfigError, load_settings
from pal.daemon.token import unusable_reason, usable

app = typer.Typer(
    cls=ConsoleGroup,
    help=(
        "Agent and human commands that talk to the server through the local pal daemon.\n\n"
        "The daemon is at LOCK_DAEMON_URL (default http://127.0.0.1:4137); its token is "
        "LOCK_DAEMON_TOKEN, else the file $PAL_HOME/daemon.token the daemon writes."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
rooms_app = typer.Typer(
    help="List rooms and members, invite agents, restart an agent's runtime.",
    no_args_is_help=True,
)
topics_app = typer.Typer(help="Create topics inside a room.", no_args_is_help=True)
messages_app = typer.Typer(help="List or show messages.", no_args_is_help=True)
http_app = typer.Typer(
    help="Share files over HTTP: upload one as an artifact and get its URL.",
    no_args_is_help=True,
)


@app.callback()
def cli(ctx: typer.Context) -> None:
    """Agent and human commands that talk to the server through the local pal daemon."""
    settings = load_settings()
    if not settings.daemon_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"LOCK_DAEMON_URL={settings.daemon_url!r} must start with http:// or https://"
        )
    token_file = settings.daemon_token_file
    token = settings.run_auth or settings.daemon_token or read_token(token_file)
    if token is not None and not usable(token):
        where = (
            "PAL_RUN_AUTH"
            if settings.run_auth
            else "LOCK_DAEMON_TOKEN"
            if settings.daemon_token
            else f"the content of {token_file}"
        )
        raise ConfigError(unusable_reason(where))
    client = DaemonClient(settings.daemon_url, token=token, token_file=str(token_file))
    ctx.obj = ctx.with_resource(client)


def read_token(path: Path) -> str | None:
    """The token in ``path``, or None when there is no such file."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"cannot read the daemon token file {path} ({reason}); set LOCK_DAEMON_TOKEN"
        ) from None


def health(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the daemon's JSON answer.")
    ] = False,
) -> None:
    """Check the daemon and, through it, the server; exit 1 if the server is not healthy."""
    client = connect(ctx)
    if not isinstance(client, DaemonClient):
        raise RuntimeError("`health` here must run under `pal cli`")
    payload = client.daemon_health()
    if as_json:
        output.print_json(payload)
    else:
        typer.echo(describe_health(payload, client.base_url))
    server = payload["server"]
    if not (isinstance(server, dict) and server.get("ok")):
        raise typer.Exit(output.EXIT_ERROR)


def describe_health(payload: DaemonHealth, daemon_url: str) -> str:
    """Two lines: the daemon's state, then the server's health as the daemon sees it."""
    d = payload["daemon"]
    computer = d["computer_id"] or "(not connected yet)"
    daemon = (
        f"daemon: {d['daemon_id']} at {daemon_url}, computer {computer}, "
        f"socket {d['socket']}, agents: {', '.join(d['agents']) or 'none'}"
    )
    if d["dry_run"]:
        daemon += " (dry run)"
    server = payload["server"]
    if isinstance(server, dict) and server.get("ok"):
        state = f"ok: pal {server['version']} at {d['server_url']} (database: {server['database']})"
    else:
        state = f"not healthy at {d['server_url']}: {server}"
    return f"{daemon}\nserver: {state}"


app.command("send")(messages.post)
app.command("health")(health)
app.command("chats")(rooms.chats)
app.command("runs")(runs.runs)
app.command("run-action")(runs.run_action)
app.add_typer(rooms_app, name="rooms")
app.add_typer(topics_app, name="topics")
app.add_typer(messages_app, name="messages")
app.add_typer(http_app, name="http")
app.add_typer(debates.app, name="debate")
rooms_app.command("list")(rooms.chats)
rooms_app.command("members")(rooms.members)
rooms_app.command("invite")(rooms.invite)
rooms_app.command("restart-agent")(rooms.restart_agent)
topics_app.command("create")(topics.create)
messages_app.command("list")(messages.list_messages)
messages_app.command("show")(messages.show)
http_app.command("file")(artifacts.upload)
