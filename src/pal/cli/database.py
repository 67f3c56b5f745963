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
        reason = str(getattr(exc, "orig", None) or exc).strip()
        typer.echo(f"error: cannot open the database {describe(url)}: {reason}", err=True)
        raise typer.Exit(1) from None
