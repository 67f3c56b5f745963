"""``pal console health``."""

from __future__ import annotations

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect


def health(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Check that the server answers and can reach its database."""
    client = connect(ctx)
    payload = client.health()
    if as_json:
        output.print_json(payload)
        return
    typer.echo(
        f"ok: pal {payload['version']} at {client.base_url} (database: {payload['database']})"
    )
