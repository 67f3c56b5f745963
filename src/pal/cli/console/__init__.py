"""``pal console``: admin commands that talk to the server directly.

One module per noun group; this module only assembles them under the ``--server`` option.
``pal cli`` (:mod:`pal.cli.agent`) assembles the same modules under the daemon's local API.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pal.admin_token import console_token
from pal.cli.console import (
    agents,
    artifacts,
    computers,
    debates,
    lark,
    messages,
    rooms,
    runs,
    status,
)
from pal.cli.console.context import ConsoleGroup
from pal.client import ServerClient
from pal.config import resolve_server_url

app = typer.Typer(
    cls=ConsoleGroup,
    help="Admin commands that talk to the pal server directly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def console(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            help="Server URL; else LOCK_SERVER_URL, else PAL_SERVER, else http://127.0.0.1:4127.",
        ),
    ] = None,
) -> None:
    """Admin commands that talk to the pal server directly."""
    url = resolve_server_url(server)
    ctx.obj = ctx.with_resource(ServerClient(url, token=console_token()))


app.command("health")(status.health)
app.command("chats")(rooms.chats)
app.command("messages")(messages.messages)
app.command("inbox")(messages.inbox)
app.command("send")(messages.send)
app.command("runs")(runs.runs)
app.command("run-action")(runs.run_action)
app.add_typer(agents.app, name="agents")
app.add_typer(computers.app, name="computers")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(debates.app, name="debates")
app.add_typer(lark.app, name="lark")
app.add_typer(lark.users_app, name="lark-users")
