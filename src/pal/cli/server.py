"""``pal server``: run the server under uvicorn."""

from __future__ import annotations

import gc

import typer

from pal.cli import logs
from pal.cli.database import describe, reported_errors
from pal.config import ConfigError, load_settings


def serve(
    host: str | None = typer.Option(None, "--host", help="Bind address [env: PAL_HOST]"),
    port: int | None = typer.Option(None, "--port", help="Bind port [env: PAL_PORT]"),
) -> None:
    """Run the pal server until interrupted."""
    # Imported here so that `pal console` and friends start without loading the server stack.
    import uvicorn

    from pal.admin_token import ensure_token
    from pal.server import access
    from pal.server.app import create_app, open_store
    from pal.server.serving import StreamEndingServer

    try:
        overrides: dict[str, object] = {}
        if host:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        settings = load_settings(None, **overrides)
        token = ensure_token(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level)
    with reported_errors(settings.db_url):
        database = open_store(settings)
    app = create_app(settings, database=database, admin_token=token)
    _tune_gc()
    typer.echo(
        f"pal server on http://{settings.host}:{settings.port} (db: {describe(settings.db_url)})",
        err=True,
    )
    if settings.token_required:
        where = "PAL_ADMIN_TOKEN" if settings.admin_token else str(settings.admin_token_file)
        typer.echo(
            f"admin token required ({access.why_required(settings)}): the token is in {where}",
            err=True,
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    StreamEndingServer(config, app.state.hub).run()
    database.close()


def _tune_gc() -> None:
    """Move start-up objects out of the collector's sight and collect young objects less
    often: under load the default thresholds run a collection every few requests, and those
    pauses were the largest part of the message post's tail latency (docs/architecture.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1_000)
