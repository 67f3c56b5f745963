"""Read and post messages: ``pal console messages | inbox | send`` and ``pal cli send |
messages list | messages show``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import Delivery, Message, MessageList, Posted

After = Annotated[int, typer.Option("--after", min=0, help="Only messages with a larger id.")]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")]
Topic = Annotated[int | None, typer.Option("--topic", min=1, help="Topic id inside the room.")]
Parent = Annotated[int | None, typer.Option("--parent", min=1, help="Message id of a thread.")]
Query = Annotated[str | None, typer.Option("--q", help="Only messages with all these words.")]
Sender = Annotated[str, typer.Option("--from", help="Who is writing: a name or agent key.")]
Mentions = Annotated[
    list[str] | None, typer.Option("--mention", help="Agent key to notify; repeat for more.")
]
ReplyTo = Annotated[int | None, typer.Option("--parent", min=1, help="Reply to this message.")]


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
    q: Query = None,
    as_json: AsJson = False,
) -> None:
    """List messages, oldest first, by room, topic, thread and search words."""
    payload = connect(ctx).list_messages(
        chat, topic=topic, parent=parent, after=after, limit=limit, q=q
    )
    print_messages(payload, as_json)


def list_messages(
    ctx: typer.Context,
    room: Annotated[
        str | None, typer.Option("--room", help="Room name or id; every room when not given.")
    ] = None,
    topic: Topic = None,
    after: After = 0,
    limit: Limit = 50,
    q: Query = None,
    as_json: AsJson = False,
) -> None:
    """List messages, oldest first, by room, topic and search words."""
    payload = connect(ctx).list_messages(room, topic=topic, after=after, limit=limit, q=q)
    print_messages(payload, as_json)


def print_messages(payload: MessageList, as_json: bool) -> None:
    """A table of messages (or the JSON answer)."""
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
    sender: Sender,
    mention: Mentions = None,
    parent: ReplyTo = None,
    topic: Topic = None,
    as_json: AsJson = False,
) -> None:
    """Post a message to a room as someone; mentioned agents get a delivery."""
    payload = connect(ctx).post_message(
        chat, sender, text, mentions=mention or (), parent=parent, topic=topic
    )
    print_posted(payload, as_json)


def post(
    ctx: typer.Context,
    text: Annotated[
        str | None, typer.Argument(metavar="TEXT", help="The message text, or use --file.")
    ] = None,
    room: Annotated[
        str | None,
        typer.Option("--room", help="Room name or id; inside a run, default: the run's room."),
    ] = None,
    sender: Annotated[
        str | None,
        typer.Option("--from", help="Who is writing; inside a run, default: the run's agent."),
    ] = None,
    mention: Mentions = None,
    parent: Annotated[
        int | None,
        typer.Option(
            "--parent", min=1, help="Reply to this message; inside a run, default: its thread."
        ),
    ] = None,
    topic: Topic = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="PATH", help="Send this UTF-8 text file's content."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Send a message (TEXT or a file's content); mentioned agents get a delivery. Inside a
    run (PAL_RUN_AUTH set) it answers in the run's room and thread as the run's agent."""
    content = _content(text, file)
    if not os.environ.get("PAL_RUN_AUTH"):
        missing = [flag for flag, value in (("--room", room), ("--from", sender)) if not value]
        if missing:
            output.fail(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                "outside a run (inside one they default to the run's room and agent)",
                output.EXIT_USAGE,
            )
    payload = connect(ctx).post_message(
        room, sender, content, mentions=mention or (), parent=parent, topic=topic
    )
    print_posted(payload, as_json)


def _content(text: str | None, file: Path | None) -> str:
    if file is None:
        if text is None:
            output.fail("give the message as TEXT or with --file PATH", output.EXIT_USAGE)
        return text
    if text is not None:
        output.fail("give the message as TEXT or with --file PATH, not both", output.EXIT_USAGE)
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        output.fail(f"--file {file} is not UTF-8 text", output.EXIT_USAGE)
    except OSError as exc:
        output.fail(f"cannot read --file {file}: {exc.strerror or exc}", output.EXIT_USAGE)


def show(
    ctx: typer.Context,
    message_id: Annotated[int, typer.Argument(metavar="MESSAGE_ID", min=1, help="Message id.")],
    as_json: AsJson = False,
) -> None:
    """Show one message in full: room, topic, thread, sender, mentions and text."""
    payload = connect(ctx).get_message(message_id)
    if as_json:
        output.print_json(payload)
        return
    typer.echo(describe_message(payload["message"]))


def describe_message(m: Message) -> str:
    """A message as a header line and its text."""
    where = [f"in {m['room']}"]
    if m["topic_id"] is not None:
        where.append(f"topic {m['topic_id']}")
    if m["parent_id"] is not None:
        where.append(f"reply to {m['parent_id']}")
    head = f"message {m['id']} {', '.join(where)}, from {m['sender']}"
    if m["mentions"]:
        head += " to " + " ".join(f"@{key}" for key in m["mentions"])
    return f"{head} at {output.short_time(m['created_at'])}\n\n{m['content']}"


def print_posted(posted: Posted, as_json: bool) -> None:
    """What a post did: the message id and the deliveries it created (or the JSON answer)."""
    if as_json:
        output.print_json(posted)
        return
    typer.echo(describe_post(posted))


def describe_post(posted: Posted) -> str:
    message = posted["message"]
    line = f"message {message['id']} posted in {message['room']}"
    if posted["suppressed"]:
        return f"{line}; no deliveries: {posted['suppressed']}"
    if not posted["deliveries"]:
        return f"{line}; no agent deliveries"
    return f"{line}; delivered to {', '.join(map(_describe_delivery, posted['deliveries']))}"


def _describe_delivery(delivery: Delivery) -> str:
    return f"{delivery['agent_key']} ({delivery['reason']}, {delivery['status']})"
