"""``pal console lark ...`` (the server's Lark bots: list, events, send, a standalone daemon)
and ``pal console lark-users ...`` (who may reach agents from Lark); also the binding of a bot
to an agent that ``pal console agents update --lark-*`` does.

Secrets never reach the output: bots print with their secret redacted, and Lark's refusals
carry Lark's code and message only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pal.cli import output
from pal.cli.console.context import AsJson, connect
from pal.client import ClientError, LarkStatus, ServerClient
from pal.config import load_settings
from pal.lark import FEISHU_DOMAIN

if TYPE_CHECKING:  # pal.lark.config needs pydantic: imported by the commands that use it
    from pal.lark.config import BotConfig, LarkConfig

app = typer.Typer(
    help="The server's Lark bots: list them, show received events, send a message.",
    no_args_is_help=True,
)
users_app = typer.Typer(
    help="The Lark users whose messages reach agents (by union_id, open_id or user_id).",
    no_args_is_help=True,
)

AppIdOption = Annotated[str, typer.Option("--app-id", help="The bot's Lark App ID (cli_...).")]
UserIdOption = Annotated[
    str,
    typer.Option(
        "--user-id", help="The Lark user's union_id (on_...), open_id (ou_...) or user_id."
    ),
]
TO_TYPES = ("chat_id", "open_id", "union_id", "email", "user_id")


def lark_config_path() -> Path:
    """PAL_LARK_CONFIG, else ``$PAL_HOME/lark.json``: the file this machine's server reads."""
    return load_settings().lark_config


# -- lark ------------------------------------------------------------------------------------


@app.command("list")
def list_bots(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the bots of lark.json with their connection state; secrets are redacted."""
    status = connect(ctx).lark_status()
    if as_json:
        output.print_json(status)
        return
    if status["bots"]:
        table = output.new_table(
            "App ID", "Label", "Agent", "Open ID", "State", "Events", "Error", flexible="Error"
        )
        for bot in status["bots"]:
            output.add_row(
                table,
                bot["app_id"],
                bot["label"],
                bot["agent"],
                bot["open_id"],
                bot["state"],
                bot["events_received"],
                bot["error"],
            )
        output.print_table(table)
    elif status["error"] is None:
        typer.echo(
            f"no Lark bots in {status['config']}; bind one with: pal console agents update "
            "--key KEY --lark-app-id APP_ID --lark-app-secret SECRET"
        )
    if status["error"] is not None:
        typer.echo(f"lark.json refused: {status['error']}")


@app.command("events")
def events(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")
    ] = 20,
    app_id: Annotated[str | None, typer.Option("--app-id", help="Only this bot's.")] = None,
    as_json: AsJson = False,
) -> None:
    """Show the newest raw events the bots received and what became of each."""
    payload = connect(ctx).lark_events(app_id=app_id, limit=limit)
    if as_json:
        output.print_json(payload)
        return
    if not payload["events"]:
        typer.echo("no Lark events yet")
        return
    table = output.new_table(
        "ID", "Time", "App ID", "Type", "Chat", "Sender", "Outcome", "Detail",
        numeric=("ID",), flexible="Detail",
    )  # fmt: skip
    for event in payload["events"]:
        output.add_row(
            table,
            event["id"],
            output.short_time(event["received_at"]),
            event["app_id"],
            event["event_type"],
            event["chat_id"],
            event["sender_id"],
            event["outcome"],
            event["detail"],
        )
    output.print_table(table)


@app.command("send")
def send(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The message text.")],
    app_id: AppIdOption,
    to: Annotated[str, typer.Option("--to", help="Who receives it: an id of --to-type.")],
    to_type: Annotated[
        str,
        typer.Option("--to-type", help="chat_id, open_id, union_id, email or user_id."),
    ] = "chat_id",
    as_json: AsJson = False,
) -> None:
    """Send a text message through a configured bot."""
    if to_type not in TO_TYPES:
        output.fail(f"--to-type must be one of {', '.join(TO_TYPES)}", output.EXIT_USAGE)
    payload = connect(ctx).lark_send(app_id, to, text, to_type=to_type)
    if as_json:
        output.print_json(payload)
        return
    message = payload["message"]
    typer.echo(f"sent Lark message {message.get('message_id')} to {to_type} {to} via {app_id}")


@app.command("daemon")
def daemon(
    app_id: AppIdOption,
    app_secret: Annotated[
        str | None,
        typer.Option("--app-secret", help="Default: the bot's secret in lark.json."),
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain", help=f"Lark's origin; default: lark.json's, else {FEISHU_DOMAIN}."
        ),
    ] = None,
) -> None:
    """Run one bot's long connection in the foreground and print each event as a JSON line.

    For testing a bot without the server. While the server also connects this bot, Lark gives
    each event to one of the two connections only. Ctrl-C stops it.
    """
    bot = _daemon_bot(app_id, app_secret, domain)
    code = asyncio.run(_run_daemon(bot))
    raise typer.Exit(code)


def _daemon_bot(app_id: str, app_secret: str | None, domain: str | None) -> BotConfig:
    from pal.lark.config import LarkConfigError, load_config

    path = lark_config_path()
    configured = None
    if app_secret is None or domain is None:
        try:
            configured = load_config(path).bot(app_id)
        except LarkConfigError as exc:
            if app_secret is None:
                output.fail(exc.message, output.EXIT_USAGE)
    if app_secret is None and configured is None:
        output.fail(
            f"Lark bot {app_id} is not in {path}: give --app-secret, or bind it with "
            "pal console agents update --lark-app-id",
            output.EXIT_USAGE,
        )
    fields = {
        "app_id": app_id,
        "app_secret": app_secret or (configured.app_secret if configured else ""),
        "domain": domain or (configured.domain if configured else FEISHU_DOMAIN),
    }
    return _bot_from_options(fields)


async def _run_daemon(bot: BotConfig) -> int:
    from pal.lark.connection import LarkConnection

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    async def on_event(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    connection = LarkConnection(bot, on_event)
    connection.start()
    shown = None
    try:
        while not stop.is_set():
            status = connection.status()
            if status.get("state") != shown:
                shown = status.get("state")
                typer.echo(f"lark daemon: bot {bot.app_id} {shown}", err=True)
            if shown == "failed":
                output.print_error(f"Lark bot {bot.app_id} stopped: {status.get('error')}")
                return output.EXIT_ERROR
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        await connection.stop()
    return 0


# -- lark-users ------------------------------------------------------------------------------


@users_app.command("list")
def list_users(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the Lark users whose messages reach agents."""
    payload = connect(ctx).list_lark_users()
    if as_json:
        output.print_json(payload)
        return
    if not payload["users"]:
        typer.echo(
            "no Lark users yet; messages from Lark reach no agent until you add one with: "
            "pal console lark-users add --user-id ID --name NAME"
        )
        return
    table = output.new_table("User ID", "Name", "Added")
    for user in payload["users"]:
        output.add_row(table, user["user_id"], user["name"], output.short_time(user["created_at"]))
    output.print_table(table)


@users_app.command("add")
def add_user(
    ctx: typer.Context,
    user_id: UserIdOption,
    name: Annotated[str, typer.Option("--name", help="Who it is (display name).")],
    as_json: AsJson = False,
) -> None:
    """Let a Lark user's messages reach agents (or rename one already allowed)."""
    payload = connect(ctx).add_lark_user(user_id, name)
    if as_json:
        output.print_json(payload)
        return
    verb = "added" if payload["created"] else "renamed"
    typer.echo(f"{verb} Lark user {payload['user']['user_id']} ({payload['user']['name']})")


@users_app.command("delete")
def delete_user(ctx: typer.Context, user_id: UserIdOption, as_json: AsJson = False) -> None:
    """Stop a Lark user's messages from reaching agents."""
    payload = connect(ctx).delete_lark_user(user_id)
    if as_json:
        output.print_json(payload)
        return
    typer.echo(f"deleted Lark user {payload['user']['user_id']} ({payload['user']['name']})")


# -- binding a bot to an agent (agents update --lark-*) --------------------------------------

OPTION_OF_FIELD = {
    "app_id": "--lark-app-id",
    "app_secret": "--lark-app-secret",
    "label": "--lark-label",
    "domain": "--lark-domain",
    "agent": "--key",
}


@dataclass
class LarkChange:
    """The ``--lark-*`` options of ``agents update``."""

    app_id: str | None = None
    app_secret: str | None = None
    label: str | None = None
    domain: str | None = None
    rebind: bool = False
    unbind: bool = False
    reload: bool = True

    @property
    def requested(self) -> bool:
        return self.app_id is not None or self.app_secret is not None or self.unbind

    def check(self, interactive: bool = False) -> None:
        """Usage errors: options that do not go together. With ``interactive``, --lark-label
        and --lark-domain alone are the defaults of the questions."""
        binding = self.app_id is not None or self.app_secret is not None
        if self.unbind and (binding or self.rebind or self.label or self.domain):
            output.fail(
                "--unbind-lark takes no other --lark-* option (nor --rebind-lark)",
                output.EXIT_USAGE,
            )
        if binding and (self.app_id is None or self.app_secret is None):
            output.fail("give both --lark-app-id and --lark-app-secret", output.EXIT_USAGE)
        defaults_only = interactive and not self.rebind and not self.unbind
        if (
            not binding
            and not defaults_only
            and (self.rebind or self.label is not None or self.domain is not None)
        ):
            output.fail(
                "--lark-label, --lark-domain and --rebind-lark go with --lark-app-id and "
                "--lark-app-secret",
                output.EXIT_USAGE,
            )


@dataclass
class Prepared:
    """A checked change of lark.json, not written yet."""

    path: Path
    config: LarkConfig
    bot: BotConfig
    message: str


def _bot_from_options(fields: dict[str, Any]) -> BotConfig:
    from pydantic import ValidationError

    from pal.lark.config import BotConfig

    try:
        return BotConfig.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            what = OPTION_OF_FIELD.get(field, field)
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "string_pattern_mismatch":
                reason = "has characters that are not allowed"
            problems.append(f"{what}: {reason[:1].lower() + reason[1:]}")
        output.fail("; ".join(problems), output.EXIT_USAGE)


def load_checked(path: Path, unchanged: str = "nothing was changed") -> LarkConfig:
    """lark.json, or the command fails saying what is wrong with it."""
    from pal.lark.config import LarkConfigError, load_config

    try:
        return load_config(path)
    except LarkConfigError as exc:
        output.fail(f"{exc.message}; fix it first ({unchanged})")


def check_credentials(
    bot: BotConfig, fix: str | None = None, unchanged: str = "nothing was changed"
) -> dict[str, Any]:
    """Lark's ``bot_info`` for ``bot`` (a tenant token, then the bot's open_id); fails the
    command, saying what to fix (``fix``, else the options to check), when Lark refuses or
    cannot be reached."""
    from pal.lark.rest import LarkApiError, LarkRest, LarkUnreachable

    async def fetch() -> dict[str, Any]:
        rest = LarkRest(bot.domain, bot.app_id, bot.app_secret)
        try:
            info: dict[str, Any] = await rest.bot_info()
            return info
        finally:
            await rest.aclose()

    try:
        return asyncio.run(fetch())
    except LarkApiError as exc:
        output.fail(
            f"Lark refused the credentials of app {bot.app_id} (code {exc.code}: {exc.msg}); "
            f"{fix or 'check --lark-app-id and --lark-app-secret'} ({unchanged})"
        )
    except LarkUnreachable as exc:
        output.fail(
            f"cannot reach Lark at {bot.domain} ({exc}); check --lark-domain and the network "
            f"({unchanged})"
        )


def prepare(
    key: str, change: LarkChange, *, fix: str | None = None, unchanged: str = "nothing was changed"
) -> Prepared:
    """Check a ``--lark-*`` change against lark.json and (when binding) against Lark itself;
    writes nothing. Any problem fails the command (``fix`` and ``unchanged``: see
    :func:`check_credentials`)."""
    from pal.lark.config import LarkConfigError, bind_bot, unbind_agent

    path = lark_config_path()
    config = load_checked(path, unchanged)
    if change.unbind:
        try:
            new, bot = unbind_agent(config, key)
        except LarkConfigError as exc:
            output.fail(exc.message)
        note = f"unbound agent {key} from Lark bot {bot.app_id} (its credential stays in {path})"
        return Prepared(path, new, bot.model_copy(update={"agent": None}), note)
    assert change.app_id is not None and change.app_secret is not None
    existing = config.bot(change.app_id)
    bot = _bot_from_options(
        {
            "app_id": change.app_id,
            "app_secret": change.app_secret,
            "agent": key,
            "label": change.label or "",
            "domain": change.domain or (existing.domain if existing else FEISHU_DOMAIN),
        }
    )
    try:
        bind_bot(config, bot, rebind=change.rebind)  # the rules first: no network for a refusal
    except LarkConfigError as exc:
        output.fail(exc.message)
    info = check_credentials(bot, fix, unchanged)
    open_id = info.get("open_id")
    bot = bot.model_copy(update={"open_id": open_id if isinstance(open_id, str) else None})
    if not bot.label and not (existing and existing.label):
        name = info.get("app_name")
        bot = bot.model_copy(update={"label": name if isinstance(name, str) else ""})
    new = bind_bot(config, bot, rebind=change.rebind)
    saved = new.bot(bot.app_id)
    assert saved is not None
    note = f"bound agent {key} to Lark bot {bot.app_id} (open_id {bot.open_id or '-'})"
    previous = config.bot_of_agent(key)
    if previous is not None and previous.app_id != bot.app_id:
        note += f"; Lark bot {previous.app_id} is no longer bound (its credential stays)"
    return Prepared(path, new, saved, note)


def apply(client: ServerClient, prepared: Prepared, change: LarkChange) -> dict[str, Any]:
    """Write lark.json (0600) and ask the server to reload it (unless ``--no-reload``);
    prints what was done unless the caller prints JSON. Returns the JSON answer's part."""
    from pal.lark.config import LarkConfigError, redact_bot, save_config

    try:
        save_config(prepared.path, prepared.config)
    except (LarkConfigError, OSError) as exc:
        reason = exc.message if isinstance(exc, LarkConfigError) else exc.strerror
        output.fail(f"cannot write {prepared.path}: {reason}")
    status: LarkStatus | None = None
    if change.reload:
        try:
            status = client.reload_lark()
        except ClientError as exc:
            output.fail(
                f"{prepared.message}; wrote {prepared.path}, but the server did not reload "
                f"it: {exc.message}; reload it later with POST /api/lark/reload"
            )
    return {
        "bot": redact_bot(prepared.bot),
        "config": str(prepared.path),
        "reloaded": status,
        "message": prepared.message,
    }


def describe_applied(result: dict[str, Any], server_url: str) -> str:
    lines = [result["message"], f"wrote {result['config']} (mode 0600)"]
    status = result["reloaded"]
    if status is None:
        lines.append(
            "not reloaded (--no-reload); apply it with: "
            f"curl -s -X POST {server_url}/api/lark/reload"
        )
    else:
        states = ", ".join(f"{b['app_id']} {b['state']}" for b in status["bots"]) or "no bots"
        lines.append(f"server reloaded Lark: {states}")
    return "\n".join(lines)


def forget_agent(client: ServerClient, key: str) -> str | None:
    """After ``key`` was deleted: unbind its Lark bot (the credential stays) and reload.
    Returns the bot's app_id, or ``None`` when it had none. A lark.json that cannot be read
    is left alone (``agents update --unbind-lark`` reports why)."""
    from pal.lark.config import LarkConfigError, load_config, save_config, unbind_agent

    path = lark_config_path()
    try:
        config = load_config(path)
        new, bot = unbind_agent(config, key)
        save_config(path, new)
    except (LarkConfigError, OSError):
        return None
    with contextlib.suppress(ClientError):
        client.reload_lark()
    return bot.app_id
