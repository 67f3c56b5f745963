"""In-process publish/subscribe for live events and daemon wake-up hints.

Events carry ids, not content; subscribers read what they need from the store. A slow
subscriber whose queue fills up loses its queue (it must resync from the store), so one stuck
browser tab can never hold up posting.

The hub also keeps the last :data:`HISTORY` events and a random ``boot`` id made when it is
created, so a client that reconnects to ``GET /api/events`` with the last id it saw gets
exactly the events it missed, or is told to resync when they are gone (another boot, or more
than :data:`HISTORY` events ago).

With several server processes on PostgreSQL, ``server/replicas.py`` hands every event
published here to the other processes (:attr:`Hub.forward`) and republishes theirs
(:meth:`Hub.republish`). Event numbers are this process's own: a remote event gets the next
local number, so resuming by id stays exact on the process that numbered the events. When
the process may have missed remote events (its listening connection dropped),
:meth:`Hub.gap` makes every subscriber and every resume resync.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

QUEUE_SIZE = 1000
HISTORY = 10_000

Event = dict[str, Any]


class Hub:
    def __init__(self, history: int = HISTORY) -> None:
        # each subscriber's queue, and the kinds it wants (None: every kind)
        self._subscribers: dict[asyncio.Queue[Event | None], frozenset[str] | None] = {}
        self._history: deque[Event] = deque(maxlen=history)
        self._last = 0
        self.boot = secrets.token_hex(4)
        self._closed = False
        # called with each event published here (not with republished ones)
        self.forward: Callable[[Event], None] | None = None

    @property
    def last(self) -> int:
        """The number of the newest event published (0 before the first)."""
        return self._last

    def publish(self, kind: str, **data: Any) -> Event:
        event = self._emit(kind, data)
        if self.forward is not None:
            self.forward(event)
        return event

    def republish(self, kind: str, data: dict[str, Any]) -> Event:
        """Publish an event another server process published (not forwarded again)."""
        return self._emit(kind, data)

    def gap(self) -> None:
        """Events may have been missed (the link to the other processes dropped): end every
        subscription (each resyncs), and skip a number with the history cleared, so a
        resume from any id before now resyncs too."""
        self._last += 1
        self._history.clear()
        for queue in list(self._subscribers):
            self._drop(queue)

    def _emit(self, kind: str, data: dict[str, Any]) -> Event:
        self._last += 1
        event = {"id": self._last, "kind": kind, **data}
        self._history.append(event)
        for queue, kinds in list(self._subscribers.items()):
            if kinds is not None and kind not in kinds:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(queue)
        return event

    def _drop(self, queue: asyncio.Queue[Event | None]) -> None:
        """Unsubscribe ``queue`` and end it with ``None`` (it lost events, or the hub closed)."""
        self._subscribers.pop(queue, None)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)

    def since(self, n: int) -> list[Event] | None:
        """Every buffered event numbered above ``n``, oldest first; None when some of them are
        no longer buffered (or ``n`` was never published): the caller must resync."""
        missed = self._last - n
        if not 0 <= missed <= len(self._history):
            return None
        newest_first = itertools.islice(reversed(self._history), missed)
        return list(newest_first)[::-1]

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every subscription (each queue gets ``None``); the server is shutting down, so
        long-lived streams finish and do not hold up the exit."""
        self._closed = True
        for queue in list(self._subscribers):
            self._drop(queue)

    @contextmanager
    def subscribe(
        self, kinds: frozenset[str] | None = None
    ) -> Iterator[asyncio.Queue[Event | None]]:
        """A queue of the events of ``kinds`` (every kind when None) from now on."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[queue] = kinds
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)
