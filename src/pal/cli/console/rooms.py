"""``pal console chats``: rooms (``chat`` is the seed's name for a room)."""

from __future__ import annotations

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect


def chats(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List rooms (chats) with their member count and newest message id."""
    payload = connect(ctx).list_rooms()
    if as_json:
        output.print_json(payload)
        return
    table = output.new_table(
        "Name",
        "ID",
        "Kind",
        "Members",
        "Last message",
        "Created",
        numeric=("Members", "Last message"),
    )
    for room in payload["rooms"]:
        output.add_row(
            table,
            room["name"],
            room["id"],
            room["kind"],
            room.get("member_count"),
            room.get("last_message_id"),
            output.short_time(room["created_at"]),
        )
    output.print_table(table)
