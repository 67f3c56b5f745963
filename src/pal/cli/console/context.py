"""What every console command shares: the server client, error reporting, common options.

``pal cli`` reuses these commands with a :class:`pal.client.DaemonClient` (the same API,
through the daemon's local API) as the group's client.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pal.cli import output
from pal.client import ClientError, ServerClient
from pal.config import ConfigError

AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]


class ConsoleGroup(TyperGroup):
    """The ``pal console`` group: turns client errors raised by any command into one
    ``error: ...`` line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            output.fail(exc.message, output.EXIT_ERROR)
        except ConfigError as exc:
            output.fail(str(exc), output.EXIT_USAGE)


def connect(ctx: typer.Context) -> ServerClient:
    """The client the group callback (``pal console`` or ``pal cli``) opened for this
    invocation."""
    client = ctx.obj
    if not isinstance(client, ServerClient):
        raise RuntimeError("these commands must run under `pal console` or `pal cli`")
    return client
