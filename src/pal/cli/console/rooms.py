"""Rooms (``chat`` is the seed's name for a room): ``pal console chats`` and the ``pal cli
chats | rooms ...`` commands."""

from __future__ import annotations

from typing import Annotated

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import Mode

Room = Annotated[str, typer.Option("--room", help="Room name or id.")]
AgentKey = Annotated[str, typer.Option("--agent", help="Agent key.")]


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


def members(ctx: typer.Context, room: Room, as_json: AsJson = False) -> None:
    """List a room's members: agents with their delivery mode, and people."""
    payload = connect(ctx).room_members(room)
    if as_json:
        output.print_json(payload)
        return
    if not payload["members"]:
        typer.echo(f"no members in {payload['room']}")
        return
    table = output.new_table("Member", "Kind", "Mode", "Name", "Runtime", "Since")
    for m in payload["members"]:
        output.add_row(
            table,
            m["member"],
            m["member_kind"],
            m["mode"],
            m["display_name"],
            m["runtime"],
            output.short_time(m["created_at"]),
        )
    output.print_table(table)


def invite(
    ctx: typer.Context,
    room: Room,
    agent: AgentKey,
    mode: Annotated[
        Mode,
        typer.Option("--mode", help="Which messages the agent gets in this room."),
    ] = "mentions",
    as_json: AsJson = False,
) -> None:
    """Invite an agent to a room with a delivery mode, or change the mode of a member."""
    payload = connect(ctx).invite_agent(room, agent, mode=mode)
    if as_json:
        output.print_json(payload)
        return
    m = payload["membership"]
    verb = "invited" if payload["created"] else "updated"
    typer.echo(f"{verb} {m['member']} in {m['room']} (mode {m['mode']})")


def restart_agent(ctx: typer.Context, room: Room, agent: AgentKey, as_json: AsJson = False) -> None:
    """Restart an agent's active runtime in a room (its newest running run).

    The run is killed and a fresh run starts for the same message.
    """
    payload = connect(ctx).restart_agent(room, agent)
    if as_json:
        output.print_json(payload)
        return
    action, run = payload["action"], payload["run"]
    typer.echo(
        f"restart requested for run {run['id']} of {run['agent_key']} in {room} "
        f"(action {action['id']}, {action['status']})"
    )
