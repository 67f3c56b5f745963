"""One bot's long connection to Lark (lark.md §1, §5.3, §6), as asyncio tasks on the running loop.

The cycle, repeated until :meth:`LarkConnection.stop` or a fatal error:

1. **Discovery**: ``POST {domain}/callback/ws/endpoint`` with the app's credentials (with a
   timeout, unlike the SDK) gives a one-time ``ws://`` URL and a ClientConfig (seconds:
   ``PingInterval``, ``ReconnectInterval``, ``ReconnectNonce``, ``ReconnectCount``).
2. **Connect** to that URL (``open_timeout``). A refused upgrade carries ``handshake-status``.
3. **Ping** at once, then every ``PingInterval``. A pong may carry a new ClientConfig, which
   replaces the live one.
4. **Read**: data frames are reassembled by transport ``message_id``; the frame that completes
   an ``event`` is **acked at once** (``{"code": 200}``, headers echoed plus ``biz_rt``) and
   only then is the event JSON queued for ``on_event``, which runs in its own task, one event
   after the other in arrival order: a slow handler never delays acks or pings. ``card``
   frames are ignored (not acked), like the SDKs do.
5. **Watchdog**: no inbound frame (pong or event) for ``PingInterval + grace`` means the
   connection is dead even if TCP says otherwise (half-open): it is closed and replaced.
6. **Reconnect** after a lost connection: ``random() * ReconnectNonce`` seconds first (spreads a
   storm of reconnects), then attempts with a backoff doubling from ``backoff_base`` and
   capped at ``ReconnectInterval``, each one repeating discovery.

Fatal, the bot stops with state ``failed`` and the reason in ``error``: discovery codes other
than 0, 1 (busy) and 1000040343 (internal error) — wrong credentials among them —, handshake
403, and handshake 514 with 1000040350 (more than 50 connections for the app), and
``ReconnectCount`` attempts exhausted. Everything else is retried.

Dedupe is not done here: the platform re-pushes events it thinks were missed, and the bridge
dedupes by (app_id, message_id) in the database. URLs from discovery hold credentials and are
never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from pal.lark import frames

log = logging.getLogger(__name__)

ENDPOINT_PATH = "/callback/ws/endpoint"
RETRYABLE_CODES = frozenset({0, 1, 1000040343})  # 0 is success
EXCEED_CONN_LIMIT = 1000040350
# The SDK's values until the platform sends its own (seconds).
DEFAULT_CONFIG = {
    "ReconnectCount": -1,
    "ReconnectInterval": 120.0,
    "ReconnectNonce": 30.0,
    "PingInterval": 120.0,
}
MIN_PING_INTERVAL = 0.05

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


class BotLike(Protocol):
    """What a connection needs of a bot (:class:`pal.lark.config.BotConfig` has it)."""

    @property
    def app_id(self) -> str: ...

    @property
    def app_secret(self) -> str: ...

    @property
    def domain(self) -> str: ...


class Fatal(Exception):
    """The platform refused this bot for good: retrying would not help."""


class Retry(Exception):
    """This attempt failed; another one may work."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LarkConnection:
    """One bot's long connection: :meth:`start`, :meth:`status`, ``await`` :meth:`stop`."""

    def __init__(
        self,
        bot: BotLike,
        on_event: EventHandler,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        grace: float | None = None,
        backoff_base: float = 1.0,
        discovery_timeout: float = 10.0,
        open_timeout: float = 10.0,
        stop_timeout: float = 2.0,
    ) -> None:
        self.bot = bot
        self.app_id = bot.app_id
        self._on_event = on_event
        self._http = http
        self._clock = clock
        self._jitter = jitter
        self._grace = grace
        self._backoff_base = backoff_base
        self._discovery_timeout = discovery_timeout
        self._open_timeout = open_timeout
        self._stop_timeout = stop_timeout
        self.config: dict[str, float] = dict(DEFAULT_CONFIG)
        self._state = "stopped"
        self._error: str | None = None
        self._connected_at: str | None = None
        self._last_frame_at: str | None = None
        self._events_received = 0
        self._reconnects = 0
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._last_inbound = 0.0

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (tasks on the running loop); returns at once."""
        if self._tasks:
            return
        self._state, self._error = "connecting", None
        self._tasks = [
            asyncio.create_task(self._run(), name=f"lark-{self.app_id}"),
            asyncio.create_task(self._dispatch(), name=f"lark-{self.app_id}-events"),
        ]

    async def stop(self) -> None:
        """Close the connection and end every task: the connection at once, the event
        handler after at most ``stop_timeout`` seconds (events already acked but not handled
        by then are dropped; the platform does not re-push acked events)."""
        if not self._tasks:
            return
        run, dispatch = self._tasks
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        if not dispatch.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events.join(), self._stop_timeout)
        dispatch.cancel()
        await asyncio.gather(dispatch, return_exceptions=True)
        self._tasks = []
        if self._state != "failed":
            self._state = "stopped"

    def status(self) -> dict[str, Any]:
        """state (connecting, connected, reconnecting, failed, stopped), error, connected_at,
        last_frame_at (ISO UTC), events_received, reconnects (connections re-established)."""
        return {
            "state": self._state,
            "error": self._error,
            "connected_at": self._connected_at,
            "last_frame_at": self._last_frame_at,
            "events_received": self._events_received,
            "reconnects": self._reconnects,
        }

    @property
    def grace(self) -> float:
        """Silence allowed beyond PingInterval before the watchdog closes the connection."""
        if self._grace is not None:
            return self._grace
        return min(30.0, max(1.0, self.config["PingInterval"] / 4))

    # -- the cycle -------------------------------------------------------------------------

    async def _run(self) -> None:
        attempts = 0  # failed attempts in a row
        ever_connected = False
        try:
            await frames.aload()
            while True:
                connected = False
                try:
                    url, service_id = await self._discover()
                    connected = await self._session(url, service_id)
                except Fatal as exc:
                    self._fail(str(exc))
                    return
                except Retry as exc:
                    self._error = str(exc)
                    log.warning(
                        "Lark bot %s: %s",
                        self.app_id,
                        exc,
                        extra={"action": "lark_connect_failed", "app_id": self.app_id},
                    )
                if connected:
                    ever_connected, attempts = True, 0
                    delay = self._jitter() * self.config["ReconnectNonce"]
                else:
                    attempts += 1
                    limit = int(self.config["ReconnectCount"])
                    if limit >= 0 and attempts > limit:
                        self._fail(f"no connection after {attempts} attempts: {self._error}")
                        return
                    cap = max(self.config["ReconnectInterval"], self._backoff_base)
                    delay = min(cap, self._backoff_base * 2 ** (attempts - 1))
                    delay *= 0.5 + 0.5 * self._jitter()
                self._state = "reconnecting" if ever_connected else "connecting"
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: say so rather than die silently
            log.exception(
                "Lark bot %s: the connection task crashed",
                self.app_id,
                extra={"action": "lark_crashed", "app_id": self.app_id},
            )
            self._fail(f"the connection task crashed ({type(exc).__name__}: {exc})")

    def _fail(self, error: str) -> None:
        self._state, self._error = "failed", error
        log.error(
            "Lark bot %s stopped: %s",
            self.app_id,
            error,
            extra={"action": "lark_failed", "app_id": self.app_id},
        )

    async def _discover(self) -> tuple[str, int]:
        """(the WebSocket URL, its service_id); applies the ClientConfig."""
        body = {"AppID": self.app_id, "AppSecret": self.bot.app_secret}
        url = self.bot.domain.rstrip("/") + ENDPOINT_PATH
        try:
            if self._http is not None:
                response = await self._http.post(
                    url, json=body, headers={"locale": "zh"}, timeout=self._discovery_timeout
                )
            else:
                async with httpx.AsyncClient(trust_env=False) as http:
                    response = await http.post(
                        url, json=body, headers={"locale": "zh"}, timeout=self._discovery_timeout
                    )
        except httpx.HTTPError as exc:
            raise Retry(
                f"endpoint discovery at {self.bot.domain} failed: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise Retry(f"endpoint discovery answered HTTP {response.status_code}")
        try:
            answer = response.json()
            code, msg = int(answer["code"]), self._scrub(str(answer.get("msg") or ""))
        except (ValueError, KeyError, TypeError):
            raise Retry("endpoint discovery answered without Lark's JSON") from None
        if code not in RETRYABLE_CODES:
            raise Fatal(
                f"Lark refused the long connection (code {code}: {msg}); check the app's "
                "App ID and App Secret, and that it receives events through a persistent "
                "connection"
            )
        if code != 0:
            raise Retry(f"endpoint discovery: Lark is busy (code {code}: {msg})")
        data = answer.get("data")
        data = data if isinstance(data, dict) else {}
        self._configure(data.get("ClientConfig"))
        ws_url = data.get("URL")
        if not isinstance(ws_url, str):
            raise Retry("endpoint discovery gave no URL")
        query = parse_qs(urlsplit(ws_url).query)
        try:
            service_id = int(query["service_id"][0])
            query["device_id"][0]  # noqa: B018 (required, like the SDK)
        except (KeyError, ValueError, IndexError):
            raise Retry("endpoint discovery gave a URL without device_id or service_id") from None
        return ws_url, service_id

    def _configure(self, config: Any) -> None:
        """Take the valid fields of a ClientConfig (seconds); keep the others."""
        if not isinstance(config, dict):
            return
        for key in DEFAULT_CONFIG:
            value = config.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= -1:
                self.config[key] = float(value)
        self.config["PingInterval"] = max(MIN_PING_INTERVAL, self.config["PingInterval"])
        self.config["ReconnectNonce"] = max(0.0, self.config["ReconnectNonce"])
        self.config["ReconnectInterval"] = max(0.0, self.config["ReconnectInterval"])

    async def _session(self, url: str, service_id: int) -> bool:
        """Connect and serve until the connection ends; True if it was established."""
        try:
            ws = await connect(
                url,
                open_timeout=self._open_timeout,
                ping_interval=None,  # Lark's own pings and our watchdog do this
                close_timeout=1,
                proxy=None,
                compression=None,
                max_queue=64,
            )
        except InvalidStatus as exc:
            raise self._handshake_error(exc) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise Retry(f"the WebSocket connection failed: {type(exc).__name__}") from None
        self._ws = ws
        self._state, self._error = "connected", None
        if self._connected_at is not None:
            self._reconnects += 1
        self._connected_at = _now()
        self._last_inbound = self._clock()
        log.info(
            "Lark bot %s connected",
            self.app_id,
            extra={"action": "lark_connected", "app_id": self.app_id},
        )
        pinger = asyncio.create_task(self._ping(service_id), name=f"lark-{self.app_id}-ping")
        dead = False
        try:
            dead = await self._read(ws)
        finally:
            pinger.cancel()
            # gather, not suppress(CancelledError): a stop() arriving right now must cancel
            # this task too, not be swallowed with the pinger's cancellation.
            await asyncio.gather(pinger, return_exceptions=True)
            self._ws = None
            if dead:  # no close handshake with a peer that does not answer
                ws.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.shield(ws.close())
        return True

    def _handshake_error(self, exc: InvalidStatus) -> Exception:
        headers = exc.response.headers
        status, msg = headers.get("handshake-status"), headers.get("handshake-msg", "")
        auth = headers.get("handshake-autherrcode")
        msg = self._scrub(msg)
        if status == "403":
            return Fatal(f"Lark refused the WebSocket (403: {msg})")
        if status == "514" and auth == str(EXCEED_CONN_LIMIT):
            return Fatal(
                f"Lark refused the WebSocket: too many connections for app {self.app_id} "
                "(Lark allows 50; stop the other clients of this app, such as another server "
                "or a `pal console lark daemon`)"
            )
        shown = f"{status}: {msg}" if status else f"HTTP {exc.response.status_code}"
        return Retry(f"Lark refused the WebSocket ({shown})")

    async def _ping(self, service_id: int) -> None:
        ping = frames.encode(frames.ping(service_id))
        while True:
            ws = self._ws
            if ws is None:
                return
            with contextlib.suppress(WebSocketException):
                async with self._send_lock:
                    await ws.send(ping)
            await asyncio.sleep(self.config["PingInterval"])

    async def _read(self, ws: ClientConnection) -> bool:
        """Read frames until the connection closes (False) or the watchdog fires (True)."""
        reassembly = frames.Reassembly()
        while True:
            silence = self.config["PingInterval"] + self.grace
            remaining = self._last_inbound + silence - self._clock()
            try:
                data = await asyncio.wait_for(ws.recv(), max(remaining, 0.001))
            except TimeoutError:
                self._error = f"no frame from Lark for {silence:g} s: reconnecting"
                log.warning(
                    "Lark bot %s: no frame for %g s, the connection is dead; reconnecting",
                    self.app_id,
                    silence,
                    extra={"action": "lark_watchdog", "app_id": self.app_id},
                )
                return True
            except WebSocketException as exc:
                self._error = f"the connection closed: {type(exc).__name__}"
                log.info(
                    "Lark bot %s: the connection closed; reconnecting",
                    self.app_id,
                    extra={"action": "lark_disconnected", "app_id": self.app_id},
                )
                return False
            self._last_inbound = self._clock()
            self._last_frame_at = _now()
            try:
                frame = frames.decode(data if isinstance(data, bytes) else b"")
                if frame.method == frames.CONTROL:
                    if frame.type == "pong" and frame.payload:
                        self._configure(json.loads(frame.payload))
                elif frame.method == frames.DATA:
                    await self._data(ws, frame, reassembly)
            except (frames.FrameError, ValueError) as exc:
                log.warning(
                    "Lark bot %s: a frame was dropped (%s)",
                    self.app_id,
                    exc,
                    extra={"action": "lark_frame_dropped", "app_id": self.app_id},
                )

    async def _data(
        self, ws: ClientConnection, frame: frames.Frame, buf: frames.Reassembly
    ) -> None:
        started = self._clock()
        payload = buf.add(frame)
        if payload is None or frame.type != "event":
            return  # a fragment, or a card callback (the SDKs ignore those too)
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            event, code = None, 500
        else:
            code = 200
        answer = frames.ack(frame, biz_rt_ms=int((self._clock() - started) * 1000), code=code)
        with contextlib.suppress(WebSocketException):
            async with self._send_lock:
                await ws.send(frames.encode(answer))
        if event is None:
            raise frames.FrameError("an event whose payload is not a JSON object")
        self._events_received += 1
        self._events.put_nowait(event)

    async def _dispatch(self) -> None:
        """Hand the queued events to ``on_event``, one at a time, in arrival order."""
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except Exception:
                log.exception(
                    "Lark bot %s: the event handler failed",
                    self.app_id,
                    extra={"action": "lark_event_failed", "app_id": self.app_id},
                )
            finally:
                self._events.task_done()

    def _scrub(self, text: str) -> str:
        secret = self.bot.app_secret
        return (text.replace(secret, "(redacted)") if secret else text)[:300]
