"""Artifacts: ``pal cli http file`` uploads a file and prints its URL; ``pal console
artifacts list|revoke|cleanup`` manage them."""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import Artifact

app = typer.Typer(
    help="List uploaded artifacts, revoke them, delete the files of expired ones.",
    no_args_is_help=True,
)

MAX_TTL = 10 * 365 * 86_400


def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The file to upload.")],
    mime: Annotated[
        str | None,
        typer.Option(
            "--mime",
            metavar="TYPE",
            help="Its media type, like text/html; default: guessed from the file name.",
        ),
    ] = None,
    title: Annotated[
        str | None,
        typer.Option("--title", metavar="TITLE", help="A name for it; default: the file name."),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl",
            metavar="SECONDS",
            min=0,
            max=MAX_TTL,
            help="Seconds it stays served; 0: until revoked; default: the server's "
            "PAL_ARTIFACT_TTL (30 days).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Upload a file as an artifact and print its URL.

    Anyone with the URL can open it until it expires or is revoked (then it answers 410).
    HTML is served in a sandbox: it cannot reach the workbench. Inside a run the artifact is
    recorded as the run's agent's, in the run's room.
    """
    client = connect(ctx)
    media_type = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with _open(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            output.fail(f"{path} is empty: an empty file cannot be an artifact", output.EXIT_USAGE)
        limit = client.list_artifacts(limit=1).get("max_bytes")
        if isinstance(limit, int) and size > limit:
            output.fail(
                f"{path} is {size:,} bytes, over the server's artifact limit of {limit:,} "
                "bytes (PAL_ARTIFACT_MAX_BYTES)"
            )
        payload = client.upload_artifact(
            file, title=title or path.name, mime=media_type, ttl=ttl, size=size
        )
    if as_json:
        output.print_json(payload)
        return
    typer.echo(payload["artifact"]["url"])


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading, or a one-line error (exit 2) saying what is wrong."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        output.fail(f"no such file: {path}", output.EXIT_USAGE)
    except IsADirectoryError:
        output.fail(f"{path} is a directory: give a file", output.EXIT_USAGE)
    except OSError as exc:
        output.fail(f"cannot read {path}: {exc.strerror or exc}", output.EXIT_USAGE)
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        output.fail(f"{path} is not a regular file: give a file", output.EXIT_USAGE)
    return file


@app.command("list")
def list_artifacts(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """List artifacts, newest first: title, type, size, who made them, status, expiry."""
    payload = connect(ctx).list_artifacts(limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["artifacts"]:
        typer.echo("no artifacts; upload one with: pal cli http file PATH")
        return
    table = output.new_table(
        "ID", "Title", "Type", "Size", "By", "Room", "Status", "Expires", numeric=("Size",)
    )
    for a in payload["artifacts"]:
        output.add_row(
            table,
            a["id"],
            a["title"],
            a["mime"],
            size_text(a["size"]),
            a["created_by"],
            a["room"],
            a["status"],
            expires_text(a),
        )
    output.print_table(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    artifact_id: Annotated[str, typer.Argument(metavar="ID", help="Artifact id (art_...).")],
    as_json: AsJson = False,
) -> None:
    """Revoke an artifact: its URL answers 410 from now on (revoking it again is harmless)."""
    payload = connect(ctx).revoke_artifact(artifact_id)
    if as_json:
        output.print_json(payload)
        return
    a = payload["artifact"]
    typer.echo(f"revoked artifact {a['id']} ({a['title']}); its URL now answers 410")


@app.command("cleanup")
def cleanup(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Delete the files of expired and revoked artifacts now (the server also does this on
    its own every 10 minutes)."""
    payload = connect(ctx).cleanup_artifacts()
    if as_json:
        output.print_json(payload)
        return
    typer.echo(
        f"removed the files of {output.plural(payload['removed'], 'artifact')} "
        f"({payload['expired']} expired, {payload['revoked']} revoked) and "
        f"{output.plural(payload['leftovers'], 'leftover')}; "
        f"{size_text(payload['bytes_freed'])} freed"
    )


def size_text(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024**2:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024**2:.1f} MiB"


def expires_text(artifact: Artifact) -> str:
    """When an active artifact expires (``never`` without an expiry), else ``-``."""
    if artifact["status"] != "active":
        return "-"
    if artifact["expires_at"] is None:
        return "never"
    return output.short_time(artifact["expires_at"])
