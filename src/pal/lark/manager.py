"""The server's Lark bots: one long connection per bot in lark.json, started, reloaded and
stopped with the server.

* :meth:`LarkManager.start` never fails the server: a lark.json that cannot be used is
  logged once (which file, which bot, which field) and shown by :meth:`status`; Lark stays
  off until the file is fixed and reloaded.
* :meth:`LarkManager.reload` validates the whole file first. An invalid file raises
  :class:`LarkConfigError` and changes nothing: the running listeners keep running. A valid
  one stops the bots that were removed or whose credentials or domain changed, starts the new
  and changed ones (and those that had stopped on a fatal error), and leaves the rest
  connected; a change of agent or label only takes effect without reconnecting.
* The event handler gets the bot's *current* configuration with every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from pal.config import Settings
from pal.errors import NotFound
from pal.lark.config import BotConfig, LarkConfig, LarkConfigError, load_config, redact_secret
from pal.server.hub import Hub
from pal.store import lark as lark_store
from pal.store.db import Database

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
OnEvent = Callable[[BotConfig, dict[str, Any]], Awaitable[None]]


class Connection(Protocol):
    """What the manager needs of a bot's long connection
    (:class:`pal.lark.connection.LarkConnection`)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Bridge(Protocol):
    """What the manager needs of the bridge that handles its events
    (:class:`pal.lark.bridge.LarkBridge`): started after the bots, stopped before their
    REST clients close."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Rest(Protocol):
    """What the manager needs of a bot's REST client (:class:`pal.lark.rest.LarkRest`)."""

    async def aclose(self) -> None: ...


ConnectFactory = Callable[[BotConfig, EventHandler], Connection]
RestFactory = Callable[[BotConfig], Any]

STATUS_FIELDS = ("state", "error", "connected_at", "last_frame_at", "events_received", "reconnects")
RESTART_STATES = ("failed", "stopped")


class UnknownBot(NotFound):
    def __init__(self, app_id: str, path: Path) -> None:
        super().__init__("Lark bot", app_id)
        self.message = (
            f"Lark bot {app_id!r} is not in {path}; `pal console lark list` shows the bots "
            "(bind one with `pal console agents update --lark-app-id ...`)"
        )
        self.args = (self.message,)


def connect_bot(bot: BotConfig, on_event: EventHandler) -> Connection:
    """A :class:`pal.lark.connection.LarkConnection` (imported only when a bot exists)."""
    from pal.lark.connection import LarkConnection

    return LarkConnection(bot, on_event)


def rest_client(bot: BotConfig) -> Any:
    """A :class:`pal.lark.rest.LarkRest` for ``bot``."""
    from pal.lark.rest import LarkRest

    return LarkRest(bot.domain, bot.app_id, bot.app_secret)


class LarkManager:
    """The bots of one server (``app.state.lark``)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        hub: Hub,
        *,
        connect: ConnectFactory = connect_bot,
        rest: RestFactory = rest_client,
        on_event: OnEvent | None = None,
    ) -> None:
        self.path = settings.lark_config
        self.db = db
        self.hub = hub
        self._connect = connect
        self._rest = rest
        self._on_event = on_event or self.record_event
        self._config = LarkConfig()
        self._connections: dict[str, Connection] = {}
        self._failures: dict[str, str] = {}  # app_id -> why its connection could not start
        self._rests: dict[str, Any] = {}
        self._error: str | None = None
        self._lock = asyncio.Lock()
        self.bridge: Bridge | None = None  # set by pal.lark.bridge.bridged_manager

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the bots of lark.json; an unusable file leaves Lark off (logged, and in
        :meth:`status`), never raises. Then start the bridge, if any."""
        await self._start_bots()
        if self.bridge is not None:
            await self.bridge.start()

    async def _start_bots(self) -> None:
        async with self._lock:
            try:
                config = load_config(self.path)
            except LarkConfigError as exc:
                self._error = exc.message
                log.error(
                    "Lark is off: %s; fix it, then POST /api/lark/reload",
                    exc.message,
                    extra={"action": "lark_config_invalid"},
                )
                return
            await self._apply(config)

    async def reload(self) -> dict[str, Any]:
        """Apply lark.json again; :class:`LarkConfigError` (nothing changed) if it is invalid."""
        async with self._lock:
            try:
                config = load_config(self.path)
            except LarkConfigError as exc:
                self._error = exc.message
                log.warning(
                    "Lark reload refused, the running bots are kept: %s",
                    exc.message,
                    extra={"action": "lark_reload_invalid"},
                )
                raise
            await self._apply(config)
            return self.status()

    async def stop(self) -> None:
        """Stop every connection, then the bridge (its queued Lark calls), and close the
        REST clients."""
        async with self._lock:
            await self._stop_bots(list(self._connections))
            if self.bridge is not None:
                await self.bridge.stop()
            for app_id in list(self._rests):
                await self._close_rest(app_id)

    async def _apply(self, config: LarkConfig) -> None:
        old = self._config
        changed = []
        for app_id in self._connections:
            before, after = old.bot(app_id), config.bot(app_id)
            if (
                after is None
                or before is None
                or after.connection_key() != before.connection_key()
                or self._connections[app_id].status().get("state") in RESTART_STATES
            ):
                changed.append(app_id)
        await self._stop_bots(changed)
        for app_id in list(self._rests):
            before, after = old.bot(app_id), config.bot(app_id)
            if after is None or before is None or after.connection_key() != before.connection_key():
                await self._close_rest(app_id)
        self._config = config
        self._error = None
        started = [bot.app_id for bot in config.bots if bot.app_id not in self._connections]
        for bot in config.bots:
            if bot.app_id in started:
                self._start_bot(bot)
        self._failures = {k: v for k, v in self._failures.items() if config.bot(k) is not None}
        if not (config.bots or changed):
            return
        log.info(
            "Lark: %d bot(s) from %s (%d started, %d stopped)",
            len(config.bots),
            self.path,
            len(started),
            len(changed),
            extra={"action": "lark_configured", "bots": [b.app_id for b in config.bots]},
        )

    def _start_bot(self, bot: BotConfig) -> None:
        app_id = bot.app_id
        self._failures.pop(app_id, None)

        async def handler(event: dict[str, Any]) -> None:
            current = self._config.bot(app_id) or bot
            try:
                await self._on_event(current, event)
            except Exception:
                log.exception(
                    "Lark event of bot %s could not be handled",
                    app_id,
                    extra={"action": "lark_event_failed", "app_id": app_id},
                )

        try:
            connection = self._connect(bot, handler)
            connection.start()
        except Exception as exc:
            # Never the exception text: it could carry the bot's secret.
            self._failures[app_id] = f"the connection could not start ({type(exc).__name__})"
            log.exception(
                "Lark bot %s could not start",
                app_id,
                extra={"action": "lark_bot_failed", "app_id": app_id},
            )
            return
        self._connections[app_id] = connection

    async def _stop_bots(self, app_ids: list[str]) -> None:
        connections = [self._connections.pop(a) for a in app_ids if a in self._connections]
        results = await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error(
                    "a Lark connection did not stop cleanly (%s)",
                    type(result).__name__,
                    extra={"action": "lark_stop_failed"},
                )

    async def _close_rest(self, app_id: str) -> None:
        client = self._rests.pop(app_id, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- what the API and the bridge use ---------------------------------------------------

    @property
    def config(self) -> LarkConfig:
        """The configuration running now (the last valid lark.json)."""
        return self._config

    def bot(self, app_id: str) -> BotConfig:
        """The running configuration of ``app_id``; :class:`UnknownBot` (404) if none."""
        bot = self._config.bot(app_id)
        if bot is None:
            raise UnknownBot(app_id, self.path)
        return bot

    def rest(self, app_id: str) -> Any:
        """The bot's REST client (:class:`pal.lark.rest.LarkRest`), made on first use and
        kept until the bot's credentials change; :class:`UnknownBot` (404) if none."""
        bot = self.bot(app_id)
        if app_id not in self._rests:
            self._rests[app_id] = self._rest(bot)
        return self._rests[app_id]

    def status(self) -> dict[str, Any]:
        """``{config, error, bots: [...]}``: each bot's configuration (secret redacted) and
        its connection's state. ``error`` is why lark.json was last refused (``None`` once a
        valid file is applied)."""
        bots = []
        for bot in self._config.bots:
            connection = self._connections.get(bot.app_id)
            state: dict[str, Any] = dict.fromkeys(STATUS_FIELDS)
            if connection is not None:
                state.update({k: v for k, v in connection.status().items() if k in STATUS_FIELDS})
            else:
                state.update(state="failed", error=self._failures.get(bot.app_id, "not started"))
            bots.append(
                {
                    "app_id": bot.app_id,
                    "label": bot.label,
                    "agent": bot.agent,
                    "open_id": bot.open_id,
                    "domain": bot.domain,
                    "app_secret": redact_secret(bot.app_secret),
                    **state,
                }
            )
        return {"config": str(self.path), "error": self._error, "bots": bots}

    async def record_event(self, bot: BotConfig, event: dict[str, Any]) -> None:
        """The handler of a manager built without a bridge (tests): keep the event (outcome
        ``ignored``) so ``pal console lark events`` shows it."""
        row = await self.db.write(
            lambda conn: lark_store.record_event(
                conn, bot.app_id, event, outcome="ignored", detail="no Lark bridge in this server"
            )
        )
        self.hub.publish("lark_event", app_id=bot.app_id, event_id=row["id"])
