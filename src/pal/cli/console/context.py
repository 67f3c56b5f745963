"""What every console command shares: the server client, error reporting, common options."""

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
    """The client the ``pal console`` callback opened for this invocation."""
    client = ctx.obj
    if not isinstance(client, ServerClient):
        raise RuntimeError("console commands must run under the `pal console` group")
    return client
