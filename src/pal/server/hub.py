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
        # each subscriber's queue, and the kinds it wants (None: every kind)
        self._subscribers: dict[asyncio.Queue[dict[str, Any] | None], frozenset[str] | None] = {}
        self._ids = itertools.count(1)

    def publish(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"id": next(self._ids), "kind": kind, **data}
        for queue, kinds in list(self._subscribers.items()):
            if kinds is not None and kind not in kinds:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.pop(queue, None)
                queue.get_nowait()
                queue.put_nowait(None)  # tells the subscriber it overflowed
        return event

    @contextmanager
    def subscribe(
        self, kinds: frozenset[str] | None = None
    ) -> Iterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue of the events of ``kinds`` (every kind when None) from now on."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[queue] = kinds
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)
