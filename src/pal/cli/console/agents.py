"""``pal console agents ...``: list, create, onboard, update and delete agents."""

from __future__ import annotations

from typing import Annotated, Any, cast, get_args

import typer

from pal.cli import output
from pal.cli.console import lark as lark_cli
from pal.cli.console import lark_setup
from pal.cli.console.context import AsJson, connect
from pal.cli.console.prompts import ask
from pal.client import Agent, AgentSaved, ApiError, Runtime, ServerClient
from pal.lark import FEISHU_DOMAIN

app = typer.Typer(help="List, create, onboard, update and delete agents.", no_args_is_help=True)

KEY_HELP = "Agent key: 1-40 letters, digits, '-' or '_'."
Key = Annotated[str, typer.Option("--key", help=KEY_HELP)]
MaybeKey = Annotated[str | None, typer.Option("--key", help=KEY_HELP)]
Name = Annotated[str | None, typer.Option("--name", help="Display name.")]
Desc = Annotated[str | None, typer.Option("--desc", help="What the agent is for.")]
NewRuntime = Annotated[
    Runtime | None, typer.Option("--runtime", help="Agent runtime; a new agent gets codex.")
]
ChangedRuntime = Annotated[Runtime | None, typer.Option("--runtime", help="New runtime.")]
Interactive = Annotated[
    bool,
    typer.Option(
        "--interactive",
        help="Ask for each field (flags given become defaults), then offer Lark setup.",
    ),
]
LarkDomain = Annotated[
    str | None,
    typer.Option(
        "--lark-domain",
        metavar="URL",
        help=f"Lark's origin (default {FEISHU_DOMAIN}; https://open.larksuite.com for Lark).",
    ),
]


@app.command("list")
def list_agents(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List agents with their runtime and the computer they are assigned to."""
    payload = connect(ctx).list_agents()
    if as_json:
        output.print_json(payload)
        return
    if not payload["agents"]:
        typer.echo("no agents yet; add one with: pal console agents create --key KEY --name NAME")
        return
    table = output.new_table(
        "Key", "Name", "Runtime", "Computer", "Description", flexible="Description"
    )
    for agent in payload["agents"]:
        output.add_row(
            table,
            agent["key"],
            agent["display_name"],
            agent["runtime"],
            agent["computer_id"],
            agent["description"],
        )
    output.print_table(table)


@app.command("create")
def create(
    ctx: typer.Context,
    key: Key,
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    runtime: NewRuntime = None,
    desc: Desc = None,
    as_json: AsJson = False,
) -> None:
    """Create an agent, or update the given fields of an existing one."""
    payload = connect(ctx).create_agent(key, display_name=name, runtime=runtime, description=desc)
    _print_saved(payload, as_json)


@app.command("onboard")
def onboard(
    ctx: typer.Context,
    key: MaybeKey = None,
    name: Name = None,
    runtime: NewRuntime = None,
    desc: Desc = None,
    computer_id: Annotated[
        str | None,
        typer.Option("--computer-id", help="Assign the agent to this computer (machine_...)."),
    ] = None,
    lark_domain: LarkDomain = None,
    interactive: Interactive = False,
    as_json: AsJson = False,
) -> None:
    """Create or update an agent and optionally assign it to a computer, in one step.

    With --interactive it asks for each field, then offers to set up the agent's Lark bot:
    create a Lark app by scanning a QR code (or opening its link), or paste an App ID and
    App Secret; the credential is checked with Lark, written to lark.json (0600) and the
    server reloads it, as with agents update --lark-app-id.
    """
    if lark_domain is not None and not interactive:
        output.fail("--lark-domain goes with --interactive", output.EXIT_USAGE)
    lark_domain = lark_setup.checked_domain(lark_domain)
    client = connect(ctx)
    if interactive:
        key = _ask("Agent key", key)
        current = _find_agent(client, key)
        name, runtime, desc = _ask_fields(current, name, runtime, desc)
        computer_id = _ask(
            "Computer id (optional)", computer_id or _get(current, "computer_id"), ""
        )
    elif key is None or name is None:
        output.fail("give --key and --name, or use --interactive", output.EXIT_USAGE)
    payload = client.onboard_agent(
        key, display_name=name, runtime=runtime, description=desc, computer_id=computer_id or None
    )
    if not as_json:
        _print_saved(payload, as_json)
    lark = None
    if interactive:
        saved = payload["agent"]["key"]
        planned = lark_setup.plan(
            payload["agent"],
            domain=lark_domain,
            unchanged=f"agent {saved} is saved; lark.json was not changed",
        )
        if planned is not None:
            lark = lark_cli.apply(client, *planned)
    if as_json:
        output.print_json(_with_lark(payload, lark))
    elif lark:
        typer.echo(lark_cli.describe_applied(lark, client.base_url))


@app.command("update")
def update(
    ctx: typer.Context,
    key: MaybeKey = None,
    runtime: ChangedRuntime = None,
    name: Name = None,
    desc: Desc = None,
    lark_app_id: Annotated[
        str | None,
        typer.Option("--lark-app-id", help="Bind this Lark bot (App ID cli_...) to the agent."),
    ] = None,
    lark_app_secret: Annotated[
        str | None,
        typer.Option("--lark-app-secret", help="The bot's App Secret (checked with Lark first)."),
    ] = None,
    lark_label: Annotated[
        str | None, typer.Option("--lark-label", help="A name for the bot in lark.json.")
    ] = None,
    lark_domain: LarkDomain = None,
    rebind_lark: Annotated[
        bool,
        typer.Option("--rebind-lark", help="Move the agent (or the bot) from its current binding."),
    ] = False,
    unbind_lark: Annotated[
        bool,
        typer.Option("--unbind-lark", help="Unbind the agent's Lark bot (its credential stays)."),
    ] = False,
    no_reload: Annotated[
        bool,
        typer.Option("--no-reload", help="Write lark.json but do not ask the server to reload."),
    ] = False,
    interactive: Interactive = False,
    as_json: AsJson = False,
) -> None:
    """Change an existing agent's runtime, display name or description, or the Lark bot
    bound to it.

    --lark-app-id with --lark-app-secret checks the credential with Lark (a tenant token and
    the bot's open_id) before anything is written, then writes lark.json (PAL_LARK_CONFIG,
    else $PAL_HOME/lark.json, mode 0600) and asks the server to reload it. An agent is bound
    to one bot at most: --rebind-lark moves it. --unbind-lark clears the binding and keeps
    the credential.

    --interactive asks for each field, then what to do with the agent's Lark bot: create a
    Lark app by scanning a QR code (or opening its link), paste an App ID and App Secret, move
    the agent to another bot or unbind it; all checked with Lark before anything is written.
    """
    client = connect(ctx)
    change = lark_cli.LarkChange(
        app_id=lark_app_id,
        app_secret=lark_app_secret,
        label=lark_label,
        domain=lark_domain,
        rebind=rebind_lark,
        unbind=unbind_lark,
        reload=not no_reload,
    )
    change.check(interactive)
    prepared = None
    if interactive:
        key = _ask("Agent key", key)
        current = client.get_agent(key)["agent"]
        name, runtime, desc = _ask_fields(current, name, runtime, desc)
        if not change.requested:
            asked: Agent = {**current, "display_name": name, "description": desc}
            planned = lark_setup.plan(
                asked, domain=change.domain, label=change.label, reload=change.reload
            )
            if planned is not None:
                prepared, change = planned
    elif key is None:
        output.fail("give --key, or use --interactive", output.EXIT_USAGE)
    elif name is None and runtime is None and desc is None and not change.requested:
        output.fail(
            "nothing to change: give --runtime, --name, --desc, --lark-app-id with "
            "--lark-app-secret, or --unbind-lark (or use --interactive)",
            output.EXIT_USAGE,
        )
    if change.requested and prepared is None:
        agent = client.get_agent(key)["agent"]  # the agent must exist before it is bound
        prepared = lark_cli.prepare(agent["key"], change)
    changed = name is not None or runtime is not None or desc is not None
    if changed:
        payload = client.update_agent(key, display_name=name, runtime=runtime, description=desc)
    else:
        payload = client.get_agent(key)
    lark = lark_cli.apply(client, prepared, change) if prepared else None
    if as_json:
        output.print_json(_with_lark(payload, lark))
        return
    if changed:
        typer.echo(f"updated agent {_describe(payload['agent'])}")
    if lark:
        typer.echo(lark_cli.describe_applied(lark, client.base_url))


@app.command("delete")
def delete(
    ctx: typer.Context,
    key: Key,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
    as_json: AsJson = False,
) -> None:
    """Delete an agent with its assignment, room memberships, active deliveries and Lark
    binding (the bot's credential stays in lark.json)."""
    if not yes:
        output.fail(
            f"deleting agent {key!r} also removes its computer assignment, room memberships "
            "and active deliveries; add --yes to confirm",
            output.EXIT_USAGE,
        )
    client = connect(ctx)
    payload = client.delete_agent(key)
    unbound = lark_cli.forget_agent(client, key)
    if as_json:
        output.print_json({**payload, "lark_unbound": unbound} if unbound else payload)
        return
    removed = payload["removed"]
    typer.echo(
        f"deleted agent {key} (removed {output.plural(removed['memberships'], 'room membership')}"
        f" and {output.plural(removed['deliveries'], 'active delivery')})"
    )
    if unbound:
        typer.echo(f"unbound Lark bot {unbound} (its credential stays in lark.json)")


def _with_lark(payload: Any, lark: dict[str, Any] | None) -> Any:
    return {**payload, "lark": lark} if lark else payload


def _print_saved(payload: AgentSaved, as_json: bool) -> None:
    if as_json:
        output.print_json(payload)
        return
    verb = "created" if payload["created"] else "updated"
    typer.echo(f"{verb} agent {_describe(payload['agent'])}")


def _describe(agent: Agent) -> str:
    where = f", on computer {agent['computer_id']}" if agent["computer_id"] else ""
    return f"{agent['key']}: {agent['display_name']!r}, runtime {agent['runtime']}{where}"


def _find_agent(client: ServerClient, key: str) -> Agent | None:
    try:
        return client.get_agent(key)["agent"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _get(agent: Agent | None, field: str) -> str | None:
    value = agent.get(field) if agent else None
    return value if isinstance(value, str) else None


def _ask(question: str, default: str | None, empty: str | None = None) -> str:
    """Prompt (on stderr, keeping stdout for ``--json``) until answered; ``empty`` (when not
    ``None``) makes a blank answer valid."""
    return str(ask(question, default, empty=empty))


def _ask_fields(
    current: Agent | None, name: str | None, runtime: Runtime | None, desc: str | None
) -> tuple[str, Runtime, str]:
    """Ask for display name, runtime and description; flags, then the current values, are
    the defaults."""
    name = _ask("Display name", name or _get(current, "display_name"))
    default = runtime or _get(current, "runtime") or "codex"
    chosen = ask("Runtime", default, choices=get_args(Runtime))
    desc = _ask("Description", desc if desc is not None else _get(current, "description"), "")
    return name, cast(Runtime, chosen), desc
