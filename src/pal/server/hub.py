"""In-process publish/subscribe for live events and daemon wake-up hints.

Events carry ids, not content; subscribers read what they need from the store. A slow
subscriber whose queue fills up loses its queue (it must resync from the store), so one stuck
browser tab can never hold up posting.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

QUEUE_SIZE = 1000


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._ids = itertools.count(1)

    def publish(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"id": next(self._ids), "kind": kind, **data}
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)  # tells the subscriber it overflowed
        return event

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any] | None]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
