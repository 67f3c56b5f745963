"""``pal console messages | inbox | send``: read and post messages."""

from __future__ import annotations

from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import Delivery, Posted

After = Annotated[int, typer.Option("--after", min=0, help="Only messages with a larger id.")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")]
Topic = Annotated[int | None, typer.Option("--topic", min=1, help="Topic id inside the room.")]
Parent = Annotated[int | None, typer.Option("--parent", min=1, help="Message id of a thread.")]


def messages(
    ctx: typer.Context,
    chat: Annotated[
        str | None,
        typer.Option("--chat", "--room", help="Room name or id; every room when not given."),
    ] = None,
    topic: Topic = None,
    parent: Parent = None,
    after: After = 0,
    limit: Limit = 50,
    q: Annotated[
        str | None, typer.Option("--q", help="Only messages with all these words.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List messages, oldest first, by room, topic, thread and search words."""
    payload = connect(ctx).list_messages(
        chat, topic=topic, parent=parent, after=after, limit=limit, q=q
    )
    if as_json:
        output.print_json(payload)
        return
    if not payload["messages"]:
        typer.echo("no messages")
        return
    table = output.new_table(
        "ID", "Time", "Room", "Re", "From", "To", "Text", numeric=("ID", "Re"), flexible="Text"
    )
    for m in payload["messages"]:
        to = " ".join(f"@{key}" for key in m["mentions"])
        time = output.short_time(m["created_at"])
        output.add_row(
            table, m["id"], time, m["room"], m["parent_id"], m["sender"], to, m["content"]
        )
    output.print_table(table)


def inbox(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option("--agent", help="Agent key.")],
    after: After = 0,
    limit: Limit = 50,
    as_json: AsJson = False,
) -> None:
    """List the messages addressed to an agent, with why and how each was delivered."""
    payload = connect(ctx).inbox(agent, after=after, limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["messages"]:
        typer.echo(f"no messages for {agent}")
        return
    table = output.new_table(
        "ID", "Time", "Room", "From", "Why", "Delivery", "Text", numeric=("ID",), flexible="Text"
    )
    for m in payload["messages"]:
        output.add_row(
            table,
            m["id"],
            output.short_time(m["created_at"]),
            m["room"],
            m["sender"],
            m["delivery_reason"],
            m["delivery_status"],
            m["content"],
        )
    output.print_table(table)


def send(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The message text.")],
    chat: Annotated[str, typer.Option("--chat", "--room", help="Room name or id.")],
    sender: Annotated[str, typer.Option("--from", help="Who is writing: a name or agent key.")],
    mention: Annotated[
        list[str] | None,
        typer.Option("--mention", help="Agent key to notify; repeat for more."),
    ] = None,
    parent: Annotated[
        int | None, typer.Option("--parent", min=1, help="Reply to this message.")
    ] = None,
    topic: Topic = None,
    as_json: AsJson = False,
) -> None:
    """Post a message to a room as someone; mentioned agents get a delivery."""
    payload = connect(ctx).post_message(
        chat, sender, text, mentions=mention or (), parent=parent, topic=topic
    )
    if as_json:
        output.print_json(payload)
        return
    typer.echo(_describe_post(payload))


def _describe_post(posted: Posted) -> str:
    message = posted["message"]
    line = f"message {message['id']} posted in {message['room']}"
    if posted["suppressed"]:
        return f"{line}; no deliveries: {posted['suppressed']}"
    if not posted["deliveries"]:
        return f"{line}; no agent deliveries"
    return f"{line}; delivered to {', '.join(map(_describe_delivery, posted['deliveries']))}"


def _describe_delivery(delivery: Delivery) -> str:
    return f"{delivery['agent_key']} ({delivery['reason']}, {delivery['status']})"
