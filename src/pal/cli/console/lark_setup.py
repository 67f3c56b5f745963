"""The Lark step of ``agents onboard --interactive`` and ``agents update --interactive``.

It asks what to do with the agent's Lark bot: create a new Lark app by scanning a QR code
(or opening its link; the device-flow registration of :mod:`pal.lark.registration`), paste
the App ID and App Secret of an existing app, and, for an agent already bound, move it or
unbind it. What was chosen then takes the path of ``agents update --lark-*``:
:func:`pal.cli.console.lark.prepare` checks it (against lark.json and with Lark) without
writing, and :func:`pal.cli.console.lark.apply` writes lark.json (0600) and asks the server to
reload. :func:`plan` asks and prepares; the caller applies.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import TYPE_CHECKING

import typer

from pal.cli import output
from pal.cli.console import lark as lark_cli
from pal.cli.console.prompts import ask, choose, confirm
from pal.client import Agent
from pal.lark import FEISHU_DOMAIN, LARK_DOMAIN

if TYPE_CHECKING:
    from pal.lark.registration import RegisteredApp, Registration

CREATE, PASTE, UNBIND, KEEP = "create", "paste", "unbind", "keep"
PASTE_FIX = "check the App ID and App Secret you pasted"


def plan(
    agent: Agent,
    *,
    domain: str | None = None,
    label: str | None = None,
    reload: bool = True,
    unchanged: str = "nothing was changed",
) -> tuple[lark_cli.Prepared, lark_cli.LarkChange] | None:
    """Ask what to do with ``agent``'s Lark bot; the checked change (not written yet), or
    ``None`` when it stays as it is. Any refusal fails the command, ending with
    ``unchanged`` (what the command has not changed)."""
    key = agent["key"]
    domain = checked_domain(domain)
    path = lark_cli.lark_config_path()
    config = lark_cli.load_checked(path, unchanged)
    bound = config.bot_of_agent(key)
    typer.echo("", err=True)
    if bound is None:
        typer.echo(f"Lark: agent {key} has no Lark bot. Set one up now?", err=True)
        options = [
            (CREATE, "create a new Lark app: scan a QR code (or open a link)"),
            (PASTE, "paste the App ID and App Secret of an existing Lark app"),
            (KEEP, "skip"),
        ]
    else:
        named = f" ({bound.label})" if bound.label else ""
        typer.echo(f"Lark: agent {key} is bound to Lark bot {bound.app_id}{named}.", err=True)
        options = [
            (KEEP, "keep it"),
            (CREATE, "create a new Lark app (QR code or link) and move the agent to it"),
            (PASTE, "paste another app's App ID and App Secret and move the agent to it"),
            (UNBIND, f"unbind it (its credential stays in {path})"),
        ]
    choice = choose("Choice", options, KEEP)
    if choice == KEEP:
        return None
    if choice == UNBIND:
        change = lark_cli.LarkChange(unbind=True, reload=reload)
        return lark_cli.prepare(key, change, unchanged=unchanged), change
    if choice == CREATE:
        app = register(domain or (bound.domain if bound else FEISHU_DOMAIN), agent, unchanged)
        app_id, secret, domain, fix = app.app_id, app.app_secret, app.domain, None
    else:
        app_id = ask("App ID (cli_...)")
        secret = ask("App Secret", secret=True)
        if domain is None and config.bot(app_id) is None:
            domain = _ask_origin(bound.domain if bound else FEISHU_DOMAIN)
        fix = PASTE_FIX
    listed = config.bot(app_id)
    owner = listed.agent if listed else None
    rebind = bound is not None and bound.app_id != app_id
    if owner not in (None, key):
        if not confirm(f"Lark bot {app_id} is bound to agent {owner}; move it to {key}?"):
            typer.echo(f"left Lark as it was ({unchanged})", err=True)
            return None
        rebind = True
    change = lark_cli.LarkChange(
        app_id=app_id, app_secret=secret, label=label, domain=domain, rebind=rebind, reload=reload
    )
    return lark_cli.prepare(key, change, fix=fix, unchanged=unchanged), change


def _ask_origin(default: str) -> str:
    from pal.lark.config import check_domain

    while True:
        try:
            return check_domain(ask(f"Lark origin ({LARK_DOMAIN} for Lark)", default))
        except ValueError as exc:
            typer.echo(f"Error: the origin {exc}", err=True)


def checked_domain(domain: str | None) -> str | None:
    """``--lark-domain`` as an origin, or a usage error saying what is wrong with it."""
    from pal.lark.config import check_domain

    try:
        return check_domain(domain) if domain is not None else None
    except ValueError as exc:
        output.fail(f"--lark-domain: {exc}", output.EXIT_USAGE)


def register(domain: str, agent: Agent, unchanged: str) -> RegisteredApp:
    """Create a Lark app by the device flow, showing its QR code and link on stderr; fails
    the command, saying what to do, when it is refused, expires or cannot start."""
    from pal.lark.registration import (
        AppRegistration,
        RegistrationDenied,
        RegistrationError,
        RegistrationExpired,
        RegistrationUnreachable,
    )

    flow = AppRegistration(domain)

    async def run() -> RegisteredApp:
        try:
            registration = await flow.begin(
                name=agent["display_name"] or agent["key"], desc=agent["description"] or None
            )
            show(registration)
            return await flow.wait(registration, on_status=_status)
        finally:
            await flow.aclose()

    again = "run the command again for a new code, or paste an existing app's App ID and Secret"
    try:
        app = asyncio.run(run())
    except KeyboardInterrupt:
        typer.echo("", err=True)
        output.fail(f"gave up waiting for the Lark app ({unchanged})")
    except RegistrationDenied:
        output.fail(
            f"the Lark app was not created: the person who scanned refused; {again} ({unchanged})"
        )
    except RegistrationExpired:
        output.fail(f"the QR code expired before the Lark app was created; {again} ({unchanged})")
    except RegistrationError as exc:
        output.fail(f"Lark refused to create the app ({exc}); {again} ({unchanged})")
    except RegistrationUnreachable as exc:
        output.fail(
            f"cannot reach Lark to create the app ({exc}); check --lark-domain and the network "
            f"({unchanged})"
        )
    brand = f" ({app.tenant_brand} tenant)" if app.tenant_brand else ""
    typer.echo(f"Lark created app {app.app_id}{brand}; checking it and binding it", err=True)
    if app.user_open_id:
        typer.echo(
            f"to let yourself reach agents through this bot: pal console lark-users add "
            f"--user-id {app.user_open_id} --name YOUR_NAME",
            err=True,
        )
    return app


def show(registration: Registration) -> None:
    """The QR code (when stderr can draw it) and the link, on stderr."""
    import segno

    minutes = max(1, round(registration.expires_in / 60))
    typer.echo(
        "Scan this QR code with the Feishu / Lark app, or open the link, to create the bot's "
        "Lark app:",
        err=True,
    )
    drawing = io.StringIO()
    segno.make(registration.url, error="l").terminal(out=drawing, compact=True, border=2)
    try:
        drawing.getvalue().encode(sys.stderr.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        typer.echo("(this terminal cannot draw the QR code: open the link)", err=True)
    else:
        sys.stderr.write(drawing.getvalue())
    typer.echo(registration.url, err=True)
    typer.echo(
        f"waiting for the app to be created (the code expires in {minutes} min; Ctrl-C gives up)",
        err=True,
    )


def _status(status: str) -> None:
    if status == "domain_switched":
        typer.echo("a Lark (larksuite.com) tenant: going on there", err=True)
