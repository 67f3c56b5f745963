"""Debates: ``debate start | stop | list | show`` (``pal cli`` and ``pal console`` alike).

A debate is two agents answering each other in the thread of its topic message, a set
number of turns; the server counts the turns as the replies are posted (docs/debates.md).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.cli.console.messages import print_messages
from pal.client import Debate, DebateStatus

MAX_TURNS = 50

app = typer.Typer(
    help="Two agents answer each other in a thread, a set number of turns.",
    no_args_is_help=True,
)

DebateId = Annotated[int, typer.Argument(metavar="ID", min=1, help="Debate id.")]


@app.command("start")
def start(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="What to debate.")],
    a: Annotated[str, typer.Option("--a", metavar="KEY", help="The agent that speaks first.")],
    b: Annotated[str, typer.Option("--b", metavar="KEY", help="The agent that answers it.")],
    chat: Annotated[
        str | None,
        typer.Option(
            "--chat", "--room", help="Room name or id; inside a run, default: the run's room."
        ),
    ] = None,
    turns: Annotated[
        int,
        typer.Option("--turns", min=1, max=MAX_TURNS, help="Replies in all, a's and b's."),
    ] = 6,
    sender: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Who starts it (posts the topic); default: operator, inside a run the "
            "run's agent.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Start a debate between two agents on a topic.

    The topic is posted in the room for --a, whose reply goes to --b, whose reply goes back
    to --a, until --turns replies have been made; every turn is a reply in the topic's
    thread. Inside a run it is started by the run's agent, in the run's room by default.
    """
    if chat is None and not os.environ.get("PAL_RUN_AUTH"):
        output.fail(
            "--chat is required outside a run (inside one it defaults to the run's room)",
            output.EXIT_USAGE,
        )
    payload = connect(ctx).start_debate(chat, a, b, topic, turns=turns, created_by=sender)
    if as_json:
        output.print_json(payload)
        return
    d = payload["debate"]
    typer.echo(
        f"debate {d['id']} started in {d['room']}: {d['a']} opens, {d['b']} answers, "
        f"{output.plural(d['turns'], 'turn')} in the thread of message {d['root_message_id']}"
    )


@app.command("stop")
def stop(
    ctx: typer.Context,
    debate_id: DebateId,
    sender: Annotated[
        str | None, typer.Option("--from", help="Who stops it (named in the notice).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Stop a running debate.

    No further reply counts, a notice says so in the thread, and the awaited agent is not
    woken if it has not picked up its turn yet. Stopping an ended debate changes nothing.
    """
    payload = connect(ctx).stop_debate(debate_id, stopped_by=sender)
    if as_json:
        output.print_json(payload)
        return
    typer.echo(describe_debate(payload["debate"]))


@app.command("list")
def list_debates(
    ctx: typer.Context,
    room: Annotated[
        str | None,
        typer.Option("--room", "--chat", help="Room name or id; every room when not given."),
    ] = None,
    status: Annotated[
        DebateStatus | None, typer.Option("--status", help="Only debates in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """List debates, newest first: who, where, how far, and whose turn it is."""
    payload = connect(ctx).list_debates(room=room, status=status, limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["debates"]:
        typer.echo("no debates")
        return
    table = output.new_table(
        "ID", "Room", "A", "B", "Turn", "Status", "Next", "Started", "Topic", flexible="Topic"
    )
    for d in payload["debates"]:
        output.add_row(
            table,
            d["id"],
            d["room"],
            d["a"],
            d["b"],
            f"{d['turn']}/{d['turns']}",
            d["status"],
            d["next_speaker"] or "-",
            output.short_time(d["created_at"]),
            d["topic"],
        )
    output.print_table(table)


@app.command("show")
def show(ctx: typer.Context, debate_id: DebateId, as_json: AsJson = False) -> None:
    """Show a debate and the messages of its thread."""
    client = connect(ctx)
    payload = client.get_debate(debate_id)
    if as_json:
        output.print_json(payload)
        return
    d = payload["debate"]
    typer.echo(describe_debate(d))
    typer.echo(f"topic: {d['topic']}\n")
    if d["root_message_id"] is not None:
        thread = client.list_messages(d["room_id"], parent=d["root_message_id"], limit=1000)
        print_messages(thread, False)


def describe_debate(d: Debate) -> str:
    """One line: who, where, how far, and whose turn it is."""
    line = f"debate {d['id']} in {d['room']}: {d['a']} and {d['b']}, {d['status']}, "
    line += f"{d['turn']} of {output.plural(d['turns'], 'turn')}"
    if d["next_speaker"]:
        line += f", waiting for {d['next_speaker']}"
    return line
