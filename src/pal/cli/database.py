"""Shared by ``pal server`` and ``pal db``: naming the database and reporting its errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


def describe(url: str) -> str:
    """The database as a person would name it: a file path, or the URL without password."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        return url.removeprefix("sqlite:///")
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@contextmanager
def reported_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be opened or migrated into one ``error:`` line, exit 1."""
    import sqlalchemy as sa

    try:
        yield
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip() + _read_only_hint(url)
        typer.echo(f"error: cannot open the database {describe(url)}: {reason}", err=True)
        raise typer.Exit(1) from None


def _read_only_hint(url: str) -> str:
    """Why SQLite cannot open a file whose folder is read-only, which it does not say."""
    import os
    from pathlib import Path

    if not url.startswith("sqlite"):
        return ""
    folder = Path(describe(url)).parent
    if not folder.is_dir() or os.access(folder, os.W_OK):
        return ""
    return (
        f" (its folder {folder} is read-only: SQLite writes the database and its -wal and -shm "
        "files there; make it writable or set PAL_DB to a writable place)"
    )
