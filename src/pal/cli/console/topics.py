"""``pal cli topics create``: topics inside a room."""

from __future__ import annotations

from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.cli.console.rooms import Room


def create(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(metavar="TITLE", help="The topic's title.")],
    room: Room,
    as_json: AsJson = False,
) -> None:
    """Create a topic inside a room; messages can then be sent and listed by its id."""
    payload = connect(ctx).create_topic(room, title)
    if as_json:
        output.print_json(payload)
        return
    topic = payload["topic"]
    typer.echo(f"topic {topic['id']} created in {room}: {topic['title']}")
