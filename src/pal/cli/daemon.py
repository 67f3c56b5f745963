"""``pal daemon``: connect this computer to the server and serve its agents.

Kept light on purpose: this module (and :mod:`pal.daemon`) never imports the server, the
store or SQLAlchemy, so an idle daemon stays small.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from pal.cli import logs
from pal.config import DEFAULT_LOCAL_PORT, ConfigError, load_settings, resolve_server_url

MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
QUIET_LOGGERS = ("httpx", "httpcore", "websockets", "uvicorn", "uvicorn.error", "uvicorn.access")


class UsageError(Exception):
    """A flag or variable has a value the daemon cannot use."""


def _number(flag: str, raw: str, low: int, high: int, unit: str = "") -> int:
    suffix = f" {unit}" if unit else ""
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(
            f"{flag} {raw!r} is not a whole number: use {low}-{high}{suffix}"
        ) from None
    if not low <= value <= high:
        raise UsageError(f"{flag} {value} is out of range: use {low}-{high}{suffix}")
    return value


def _cwd(raw: str | None) -> str | None:
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise UsageError(f"--cwd {raw!r} {what}: pass an existing directory for runs")
    return str(path.resolve())


def run(
    server: str | None = typer.Option(
        None,
        "--server",
        metavar="URL",
        help="Server URL; else LOCK_SERVER_URL, else PAL_SERVER, else http://127.0.0.1:4127.",
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", metavar="KEY", help="The computer's API key; else PAL_API_KEY."
    ),
    interval: str = typer.Option(
        "5000", "--interval", metavar="MS", help="Heartbeat and fallback polling period (ms)."
    ),
    local_port: str = typer.Option(
        str(DEFAULT_LOCAL_PORT),
        "--local-port",
        metavar="PORT",
        help="Port of the local API for `pal cli` (127.0.0.1 only).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Claim and record runs without executing the agent runtime."
    ),
    once: bool = typer.Option(
        False, "--once", help="Process what is pending, then exit (1 if anything failed)."
    ),
    cwd: str | None = typer.Option(
        None,
        "--cwd",
        metavar="DIR",
        help="Working directory for runs (must exist); default $PAL_HOME/agents/<key>.",
    ),
    agent: str | None = typer.Option(
        None, "--agent", metavar="KEY", help="Legacy: serve this agent; else PAL_AGENT."
    ),
    computer_id: str | None = typer.Option(
        None, "--computer-id", metavar="ID", help="Legacy computer id; else PAL_COMPUTER_ID."
    ),
    computer_secret: str | None = typer.Option(
        None,
        "--computer-secret",
        metavar="SECRET",
        help="Legacy computer secret; else PAL_COMPUTER_SECRET.",
    ),
) -> None:
    """Connect this computer to the server, claim deliveries for its agents, start runs."""
    from pal.daemon.local_api import PortInUse
    from pal.daemon.main import Daemon, Options
    from pal.daemon.token import TokenFileError, local_api_token, unusable_reason, usable

    try:
        settings = load_settings()
        server_url = resolve_server_url(server)
        key = api_key or settings.api_key
        legacy_id = computer_id or settings.computer_id
        legacy_secret = computer_secret or settings.computer_secret
        if settings.daemon_token and not usable(settings.daemon_token):
            raise UsageError(unusable_reason("LOCK_DAEMON_TOKEN"))
        if not key and not (legacy_id and legacy_secret):
            raise UsageError(
                "no credential: pass --api-key sk_machine_... (or set PAL_API_KEY), or "
                "--computer-id and --computer-secret for a legacy daemon"
            )
        options = Options(
            server_url=server_url,
            api_key=key or None,
            interval=_number("--interval", interval, MIN_INTERVAL_MS, MAX_INTERVAL_MS, "ms") / 1000,
            local_port=_number("--local-port", local_port, 1, 65535),
            dry_run=dry_run,
            once=once,
            cwd=_cwd(cwd),
            home=settings.home,
            kill_grace=settings.kill_grace,
            agent=None if key else (agent or settings.agent),
            computer_id=None if key else legacy_id,
            computer_secret=None if key else legacy_secret,
        )
    except (ConfigError, UsageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, quiet=QUIET_LOGGERS)
    if key and (agent or settings.agent):
        logging.getLogger("pal.daemon").warning(
            "--agent/PAL_AGENT is ignored with an API key: assign agents to this computer "
            "with `pal console agents onboard --computer-id ...`"
        )
    try:
        token = local_api_token(settings)
    except (OSError, TokenFileError) as exc:
        typer.echo(f"error: cannot set up the local API token: {exc}", err=True)
        raise typer.Exit(1) from None
    daemon = Daemon(options, token)
    try:
        code = asyncio.run(daemon.run())
    except PortInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if daemon.fatal is not None:
        typer.echo(f"error: {daemon.fatal}", err=True)
    raise typer.Exit(code)
