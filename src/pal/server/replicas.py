"""The hub across server processes: PostgreSQL LISTEN/NOTIFY between replicas.

Several ``pal server`` processes may share one PostgreSQL database. Each keeps its own
:class:`~pal.server.hub.Hub`; :class:`Replicas` joins them:

* **out**: every event published on this hub is queued (the hub's ``forward`` hook; the
  data is already committed when an event is published) and a sender task NOTIFYs the
  queue on :data:`~pal.store.notify.CHANNEL`, many events per notification
  (``{"origin": <boot>, "events": [[kind, data], ...]}``, under PostgreSQL's 8000-byte
  limit). A failed NOTIFY is retried with backoff, in order; past :data:`MAX_OUTBOX`
  queued events the queue is dropped and the other replicas are told to resync instead.
* **in**: a dedicated listening connection receives every replica's notifications, skips
  its own (``origin``: a random id of this process), and republishes the rest on the local
  hub, where they get the next local event number. So event ids stay per replica: a client resuming
  ``GET /api/events`` on the replica that numbered its events gets exactly what it missed;
  on another replica the boot id differs and it is told to resync.
* **gaps**: when the listening connection drops, notifications sent meanwhile are lost.
  Once it is back (reconnecting with backoff), :meth:`Hub.gap` makes every event stream and
  daemon socket of this replica resync (daemons drain pending work on ``resync``), and any
  resume from before the gap resyncs too. A ``{"resync": true}`` notification from a
  replica that had to drop events it owed does the same on every other replica.

A lost notification only delays work, never loses it: daemons also drain on every
heartbeat and reconnect, and browsers reload on resync. SQLite is one process: no
:class:`Replicas` there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import Any

import orjson

from pal.server.hub import Event, Hub
from pal.store.db import Database
from pal.store.notify import MAX_PAYLOAD, Listener, ListenerLost, notify

log = logging.getLogger(__name__)

# Events queued for the other replicas before the queue is dropped (and a resync sent).
MAX_OUTBOX = 50_000
RETRY_BASE = 0.2
RETRY_CAP = 5.0
# How long stop() tries to send what is still queued.
FLUSH_SECONDS = 2.0


def _delay(attempt: int) -> float:
    return float(min(RETRY_CAP, RETRY_BASE * 2 ** min(attempt, 16)))


def encode(origin: str, events: list[Event], *, resync: bool = False) -> list[str]:
    """The notification payloads for ``events`` (their local ids left out), each under
    :data:`MAX_PAYLOAD` bytes; an event too big for one alone becomes a resync."""
    head = orjson.dumps(origin)
    parts: list[bytes] = []
    for event in events:
        data = {k: v for k, v in event.items() if k not in ("id", "kind")}
        part = orjson.dumps([event["kind"], data], option=orjson.OPT_NON_STR_KEYS)
        if len(part) + len(head) + 64 > MAX_PAYLOAD:
            log.warning(
                "a %s event is too big to notify (%d bytes): the other replicas resync",
                event["kind"],
                len(part),
                extra={"action": "replica_event_too_big"},
            )
            resync = True
            continue
        parts.append(part)
    payloads: list[bytes] = []
    chunk: list[bytes] = []
    size = 0

    def close_chunk() -> None:
        nonlocal resync, chunk, size
        flag = b',"resync":true' if resync else b""
        payloads.append(b'{"origin":' + head + flag + b',"events":[' + b",".join(chunk) + b"]}")
        resync, chunk, size = False, [], 0

    for part in parts:
        if chunk and size + len(part) + len(head) + 64 > MAX_PAYLOAD:
            close_chunk()
        chunk.append(part)
        size += len(part) + 1
    if chunk or resync:
        close_chunk()
    return [p.decode() for p in payloads]


def decode(payload: str) -> tuple[str, bool, list[tuple[str, dict[str, Any]]]]:
    """``(origin, resync, [(kind, data), ...])`` of one payload; ValueError if malformed."""
    body = orjson.loads(payload)
    if not isinstance(body, dict) or not isinstance(body.get("origin"), str):
        raise ValueError("not a pal hub notification")
    events: list[tuple[str, dict[str, Any]]] = []
    for item in body.get("events") or []:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        ):
            raise ValueError("not a pal hub notification")
        events.append((item[0], item[1]))
    return body["origin"], bool(body.get("resync")), events


class Replicas:
    """The link between this process's hub and the other replicas' (see the module
    docstring). Build with :meth:`start`; :meth:`stop` at shutdown."""

    def __init__(self, hub: Hub, db: Database) -> None:
        self.hub = hub
        self.db = db
        self.listening = False
        self.origin = secrets.token_hex(8)
        self._listener = Listener(db.url, f"pal-listen-{self.origin}")
        self._own_prefix = '{"origin":"' + self.origin + '"'
        self._outbox: deque[Event] = deque()
        self._owed_resyncs = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, hub: Hub, db: Database) -> Replicas:
        """Forward the hub's events and listen for the other replicas'. A listening
        connection that cannot open now is retried in the background."""
        replicas = cls(hub, db)
        try:
            await replicas._listener.connect()
            replicas.listening = True
        except (*ListenerLost, OSError) as exc:
            replicas._lost("could not listen for the other replicas' events", exc)
        hub.forward = replicas._enqueue
        replicas._tasks = [
            asyncio.create_task(replicas._listen(), name="replicas-listen"),
            asyncio.create_task(replicas._send(), name="replicas-send"),
        ]
        return replicas

    async def stop(self) -> None:
        """Stop listening; send what is still queued (for up to :data:`FLUSH_SECONDS`)."""
        if self.hub.forward == self._enqueue:
            self.hub.forward = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._outbox or self._owed_resyncs:
            payloads = encode(self.origin, list(self._outbox), resync=self._owed_resyncs > 0)
            try:
                await asyncio.wait_for(self.db.write(notify, payloads), FLUSH_SECONDS)
            except Exception as exc:
                log.warning(
                    "%d events were not sent to the other replicas: %s",
                    len(self._outbox),
                    exc,
                    extra={"action": "replica_flush_failed"},
                )
        await self._listener.close()
        self.listening = False

    # -- out -----------------------------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            log.warning(
                "%d events queued for the other replicas: dropped, they will resync",
                len(self._outbox),
                extra={"action": "replica_outbox_dropped"},
            )
            self._outbox.clear()
            self._owed_resyncs += 1
        self._outbox.append(event)
        self._wake.set()

    async def _send(self) -> None:
        failures = 0
        while True:
            if not self._outbox and not self._owed_resyncs:
                self._wake.clear()
                await self._wake.wait()
            batch = list(self._outbox)
            self._outbox.clear()
            owed = self._owed_resyncs
            try:
                await self.db.write(notify, encode(self.origin, batch, resync=owed > 0))
            except Exception as exc:
                if failures == 0:
                    log.warning(
                        "could not notify the other replicas (%s); retrying",
                        exc,
                        extra={"action": "replica_notify_failed"},
                    )
                self._outbox.extendleft(reversed(batch))
                if len(self._outbox) > MAX_OUTBOX:
                    self._outbox.clear()
                    self._owed_resyncs += 1
                await asyncio.sleep(_delay(failures))
                failures += 1
                continue
            self._owed_resyncs -= owed
            if failures:
                log.info("notifying the other replicas again", extra={"action": "replica_notify"})
            failures = 0

    # -- in ------------------------------------------------------------------------------

    def _lost(self, what: str, exc: BaseException) -> None:
        self.listening = False
        log.warning(
            "%s: %s; retrying",
            what,
            str(exc).strip() or type(exc).__name__,
            extra={"action": "replica_listen_lost"},
        )

    async def _listen(self) -> None:
        attempt = 0
        while True:
            if not self.listening:
                await asyncio.sleep(_delay(attempt))
                attempt += 1
                try:
                    await self._listener.connect()
                except (*ListenerLost, OSError) as exc:
                    if attempt == 1:
                        self._lost("could not listen for the other replicas' events", exc)
                    continue
                attempt = 0
                self.listening = True
                # what the other replicas published while we were not listening is lost
                self.hub.gap()
                log.info(
                    "listening for the other replicas' events again; clients resync",
                    extra={"action": "replica_listen"},
                )
            try:
                async with contextlib.aclosing(self._listener.payloads()) as payloads:
                    async for payload in payloads:
                        self._receive(payload)
            except ListenerLost as exc:
                self._lost("lost the connection listening for the other replicas", exc)

    def _receive(self, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            return  # this process's own notification: its hub has the events already
        try:
            origin, resync, events = decode(payload)
        except ValueError:
            log.warning(
                "ignored a notification on the hub channel that pal did not send",
                extra={"action": "replica_bad_payload"},
            )
            return
        if origin == self.origin:
            return
        if resync:
            self.hub.gap()
        for kind, data in events:
            self.hub.republish(kind, data)
