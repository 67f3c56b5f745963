"""``pal up``: the server, this machine's computer and its daemon, in one command.

It starts ``pal server`` as a child, waits for its ``/health``, provisions a computer for
this machine (or reuses the one saved in ``$PAL_HOME/computer.json``), starts ``pal daemon``
as a second child with the key in its environment (never on its command line, so ``ps``
does not show it), waits for the daemon's local ``/health``, then prints where everything
is. SIGINT and SIGTERM are forwarded to both children (the daemon first, so it can hand its
claims back to the server); when either child exits on its own, the other is stopped and
``pal up`` exits non-zero.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer

from pal.cli import output
from pal.cli.agent import read_token
from pal.cli.children import Child, Events, ExitEvent
from pal.cli.computer_file import ensure_computer
from pal.client import ClientError
from pal.config import DEFAULT_LOCAL_PORT, DEFAULT_SERVER_URL, ConfigError, Settings, load_settings

START_TIMEOUT = 60.0
"""Seconds each child gets to answer its ``/health``."""
STOP_TIMEOUT = 20.0
"""Seconds each child gets to exit after the forwarded signal, before it is killed."""
FORWARDED = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM}
if hasattr(signal, "SIGHUP"):
    FORWARDED[signal.SIGHUP] = signal.SIGTERM


class Stopped(Exception):
    """A signal arrived while ``pal up`` was starting its children."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def up(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Pass --dry-run to the daemon: record runs, execute nothing."
        ),
    ] = False,
    local_port: Annotated[
        int | None,
        typer.Option(
            "--local-port",
            min=1,
            max=65535,
            help="The daemon's local API port; default: the port of LOCK_DAEMON_URL, else 4137.",
        ),
    ] = None,
) -> None:
    """Start the server, this machine's computer and its daemon; Ctrl-C stops them."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        output.fail(str(exc), output.EXIT_USAGE)
    server_url = local_url(settings.host, settings.port)
    port = local_port or urlsplit(settings.daemon_url).port or DEFAULT_LOCAL_PORT
    daemon_url = f"http://127.0.0.1:{port}"
    _refuse_busy_ports(settings, server_url, port)
    events = Events()
    previous = {signum: signal.signal(signum, events.on_signal) for signum in FORWARDED}
    children: list[Child] = []
    try:
        code = _run(settings, server_url, daemon_url, dry_run, events, children)
    finally:
        _stop_all(children, events, signal.SIGTERM)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    raise typer.Exit(code)


def _run(
    settings: Settings,
    server_url: str,
    daemon_url: str,
    dry_run: bool,
    events: Events,
    children: list[Child],
) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        server = Child.start("server", [sys.executable, "-m", "pal", "server"], env, events)
        children.append(server)
        _wait_ready(server, children, events, lambda: _server_ready(server_url))
        try:
            computer, note = ensure_computer(settings.home, server_url)
        except ClientError as exc:
            output.fail(f"cannot set up this machine's computer: {exc.message}")
        except OSError as exc:
            output.fail(f"cannot save this machine's computer under {settings.home}: {exc}")
        daemon_env = {
            k: v
            for k, v in env.items()
            if k not in ("PAL_AGENT", "PAL_COMPUTER_ID", "PAL_COMPUTER_SECRET")
        }
        daemon_env["PAL_API_KEY"] = computer["api_key"]
        port = str(urlsplit(daemon_url).port)
        argv = [sys.executable, "-m", "pal", "daemon", "--server", server_url]
        argv += ["--local-port", port] + (["--dry-run"] if dry_run else [])
        daemon = Child.start("daemon", argv, daemon_env, events)
        children.insert(0, daemon)  # stopped first: it hands its claims back to the server
        _wait_ready(
            daemon, children, events, lambda: _daemon_ready(settings, daemon_url, computer["id"])
        )
    except Stopped as stopped:
        _stop_all(children, events, stopped.signum)
        return stopped_status(children)
    typer.echo(_banner(server_url, daemon_url, computer["id"], note, dry_run))
    for child in children:
        child.show_output()
    return _supervise(children, events)


def _supervise(children: list[Child], events: Events) -> int:
    """Wait for a signal (forward it) or a child's exit (stop the other); the exit status."""
    while True:
        event = events.get(timeout=1.0)
        if event is None:
            continue
        if isinstance(event, ExitEvent):
            child = next(c for c in children if c.name == event.name)
            output.print_error(
                f"the pal {child.name} exited with status {child.returncode}; stopping pal"
            )
            _stop_all(children, events, signal.SIGTERM)
            return 1
        _stop_all(children, events, event)
        return stopped_status(children)


def stopped_status(children: list[Child]) -> int:
    """0 when every child stopped cleanly; else 1, with one line for each that did not."""
    code = 0
    for child in children:
        if not child.stopped_cleanly():
            output.print_error(f"the pal {child.name} exited with status {child.returncode}")
            code = 1
    return code


def _stop_all(children: list[Child], events: Events, signum: int) -> None:
    """Stop each running child in order with ``signum``; kill it after STOP_TIMEOUT, or at
    once when another signal arrives meanwhile."""
    for child in children:
        if child.running():
            child.stop(FORWARDED.get(signal.Signals(signum), signal.SIGTERM), STOP_TIMEOUT, events)


def _wait_ready(
    child: Child, children: list[Child], events: Events, ready: Callable[[], bool]
) -> None:
    """Poll ``ready`` until ``child`` is ready; fail with a child's last output lines when
    any of ``children`` exits, or when ``child`` is not ready within START_TIMEOUT;
    :class:`Stopped` on a signal."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if ready():
            return
        for gone in (c for c in children if not c.running()):
            _fail_start(gone, f"the pal {gone.name} exited with status {gone.returncode}")
        if time.monotonic() > deadline:
            _fail_start(child, f"the pal {child.name} did not get ready in {START_TIMEOUT:g}s")
        event = events.get(timeout=0.1)
        if isinstance(event, int):
            raise Stopped(event)


def _fail_start(child: Child, reason: str) -> None:
    tail = child.tail()
    output.print_error(reason + ("; its last output:" if tail else ""))
    if tail:
        typer.echo(tail, err=True)
    raise typer.Exit(output.EXIT_ERROR)


def _server_ready(server_url: str) -> bool:
    try:
        return httpx.get(f"{server_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _daemon_ready(settings: Settings, daemon_url: str, computer_id: str) -> bool:
    """The daemon answers its local ``/health`` and has connected as ``computer_id``."""
    try:
        token = settings.daemon_token or read_token(settings.daemon_token_file)
    except ConfigError:  # unusable: the daemon says why when it exits
        return False
    if token is None:
        return False
    headers = {"authorization": f"Bearer {token}"}
    try:
        answer = httpx.get(f"{daemon_url}/health", headers=headers, timeout=2)
    except httpx.TransportError:
        return False
    if answer.status_code != 200:
        return False
    try:
        state = answer.json()["daemon"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(state, dict) and state.get("computer_id") == computer_id


def local_url(host: str, port: int) -> str:
    """The URL this machine reaches a server bound to ``host``:``port`` at (the wildcard
    addresses become loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _refuse_busy_ports(settings: Settings, server_url: str, local_port: int) -> None:
    parts = urlsplit(server_url)
    if _listening(parts.hostname or "127.0.0.1", settings.port):
        if _is_pal_server(server_url):
            output.fail(
                f"a pal server is already running at {server_url}; stop it first, "
                "or set PAL_PORT to start another one"
            )
        output.fail(
            f"port {settings.port} is already in use by another program; "
            "set PAL_PORT to a free port"
        )
    if _listening("127.0.0.1", local_port):
        output.fail(
            f"port {local_port} for the daemon's local API is already in use (another "
            "`pal daemon` or `pal up`?); stop it, or pass --local-port (and set "
            "LOCK_DAEMON_URL for `pal cli`)"
        )


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _is_pal_server(url: str) -> bool:
    try:
        body: Any = httpx.get(f"{url}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and "version" in body and "database" in body


def _banner(server_url: str, daemon_url: str, computer_id: str, note: str, dry: bool) -> str:
    console = "pal console"
    if server_url != DEFAULT_SERVER_URL:
        console += f" --server {server_url}"
    cli = "pal cli"
    if daemon_url != f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}":
        cli = f"LOCK_DAEMON_URL={daemon_url} pal cli"
    mode = " (dry run: runs are recorded, nothing is executed)" if dry else ""
    return (
        "pal is up\n"
        f"  workbench: {server_url}/\n"
        f"  computer:  {computer_id} ({note})\n"
        f"  daemon:    {daemon_url}{mode}\n"
        "next steps:\n"
        f"  {console} agents onboard --key codex --name 'Codex Agent' --runtime codex "
        f"--computer-id {computer_id}\n"
        f"  {cli} send --room general --from alice --mention codex 'hello'\n"
        "press Ctrl-C to stop"
    )
