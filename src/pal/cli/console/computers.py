"""``pal console computers ...``: provision computers, list them, revoke or rotate keys."""

from __future__ import annotations

from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import ComputerKey

app = typer.Typer(
    help="Provision computers for daemons, list them, revoke or rotate their keys.",
    no_args_is_help=True,
)

ComputerId = Annotated[str, typer.Option("--id", metavar="ID", help="Computer id (machine_...).")]


@app.command("list")
def list_computers(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List computers with their status, last heartbeat and assigned agents."""
    payload = connect(ctx).list_computers()
    if as_json:
        output.print_json(payload)
        return
    if not payload["computers"]:
        typer.echo("no computers yet; add one with: pal console computers provision --name NAME")
        return
    table = output.new_table("ID", "Name", "Status", "Last seen", "Platform", "Agents")
    for c in payload["computers"]:
        output.add_row(
            table,
            c["id"],
            c["name"],
            c["status"],
            output.short_time(c["last_seen_at"]),
            c["platform"],
            " ".join(c.get("agents", [])),
        )
    output.print_table(table)


@app.command("provision")
def provision(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A name for the computer.")],
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server-url",
            metavar="URL",
            help="The server URL its daemon uses; default: the URL the server is reached at.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Provision a computer: prints its API key (shown only once) and its daemon command."""
    payload = connect(ctx).provision_computer(name, server_url=server_url)
    _print_key(payload, as_json, "provisioned")


@app.command("revoke")
def revoke(ctx: typer.Context, computer_id: ComputerId, as_json: AsJson = False) -> None:
    """Revoke a computer's key: it stops working at once and its daemon is disconnected."""
    payload = connect(ctx).revoke_computer(computer_id)
    if as_json:
        output.print_json(payload)
        return
    c = payload["computer"]
    typer.echo(f"revoked computer {c['id']} ({c['name']}); its key no longer works")


@app.command("rotate")
def rotate(ctx: typer.Context, computer_id: ComputerId, as_json: AsJson = False) -> None:
    """Give a computer a new API key (printed once); the old key stops working at once."""
    payload = connect(ctx).rotate_computer(computer_id)
    _print_key(payload, as_json, "new key for")


def _print_key(payload: ComputerKey, as_json: bool, verb: str) -> None:
    if as_json:
        output.print_json(payload)
        return
    c = payload["computer"]
    typer.echo(
        f"{verb} computer {c['id']} ({c['name']})\n"
        f"api key (shown only now; keep it secret): {payload['api_key']}\n"
        f"start its daemon with:\n  {payload['daemon_command']}\n"
        f"or from a source checkout:\n  {payload['source_command']}"
    )
