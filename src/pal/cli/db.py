"""``pal db``: database maintenance."""

from __future__ import annotations

import typer

from pal.cli.database import describe, reported_errors
from pal.config import ConfigError, ensure_home, load_settings

app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Migrate PAL_DB to the newest schema (the server also does this at start)."""
    from pal.store import migrate  # keeps alembic out of every other command's start-up

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with reported_errors(settings.db_url):
        if settings.is_sqlite:
            ensure_home(settings.home)
        migrate.upgrade(settings.db_url)
        revision = migrate.current_revision(settings.db_url)
    typer.echo(f"{describe(settings.db_url)} is at revision {revision}")
