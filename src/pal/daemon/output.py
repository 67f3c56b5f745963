"""Ship a run's output to the server in numbered chunks, without ever holding up the run.

:meth:`OutputShipper.write` is called with raw pipe bytes. Each stream has its own
incremental UTF-8 decoder (a multi-byte character split across two reads is decoded whole;
invalid bytes become U+FFFD), and the text is cut into chunks of at most ``chunk_bytes``
UTF-8 bytes on character boundaries, numbered 0, 1, 2, ... across both streams. A
background task posts them in batches every ``interval`` seconds, or as soon as
``batch_bytes`` are waiting. The server stores each ``seq`` once, so a batch whose answer
was lost is simply sent again.

The run never waits for the server: while sending fails, chunks pile up to
``max_buffered`` bytes, then the oldest are dropped and counted in ``dropped_bytes`` (the
server keeps only the newest output of a run anyway).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pal.daemon.backoff import Backoff, RetryLog
from pal.daemon.server_api import ApiError

log = logging.getLogger("pal.daemon")

# Posts a batch of chunks; raises on failure (its answer is not used).
Send = Callable[[list[dict[str, Any]]], Awaitable[object]]

MAX_BATCH_CHUNKS = 256  # the server takes 1-256 chunks per request
_RETRY_CAP = 10.0  # seconds: the longest pause between two attempts (at most 40 intervals)


class _Chunk:
    __slots__ = ("seq", "stream", "parts", "size")

    def __init__(self, seq: int, stream: str, text: str, size: int) -> None:
        self.seq = seq
        self.stream = stream
        self.parts = [text]  # joined when sent: many small writes stay cheap
        self.size = size  # UTF-8 bytes of the text

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "stream": self.stream, "data": "".join(self.parts)}


def _never_sent(exc: Exception) -> bool:
    """The server refused this batch for good: sending it again cannot help."""
    return isinstance(exc, ApiError) and 400 <= exc.status < 500 and exc.status not in (408, 429)


class OutputShipper:
    """Buffers a run's output and posts it with ``send``; see the module docstring."""

    def __init__(
        self,
        send: Send,
        *,
        interval: float = 0.25,
        batch_bytes: int = 256 * 1024,
        max_buffered: int = 8 * 1024 * 1024,
        chunk_bytes: int = 64 * 1024,
    ) -> None:
        if chunk_bytes < 4:
            raise ValueError("chunk_bytes must hold a UTF-8 character (at least 4)")
        self._send = send
        self._interval = interval
        self._batch_bytes = batch_bytes
        self._max_buffered = max_buffered
        self._chunk_bytes = chunk_bytes
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}
        self._pending: deque[_Chunk] = deque()
        self._pending_bytes = 0
        self._in_flight: list[_Chunk] = []
        self._next_seq = 0
        self._wake = asyncio.Event()  # batch_bytes are waiting, or closing
        self._closing = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._retry_log = RetryLog(log, "sending run output")
        self.dropped_bytes = 0
        self.sent_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting to be sent (the batch being sent included)."""
        return self._pending_bytes + sum(chunk.size for chunk in self._in_flight)

    def write(self, stream: str, data: bytes) -> None:
        """Queue ``data`` from ``stream`` (``stdout`` or ``stderr``). Never blocks or raises."""
        try:
            if self._closed:
                self.dropped_bytes += len(data)
                return
            decoder = self._decoders.get(stream)
            if decoder is None:
                decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")(
                    errors="replace"
                )
            self._add(stream, decoder.decode(data))
        except Exception:  # the run must go on whatever happens to its output
            log.exception("run output lost", extra={"action": "output_write_failed"})

    def start(self) -> None:
        """Start posting in the background (call once, inside the event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="output_shipper")

    async def close(self, timeout: float = 10.0) -> None:
        """Send everything still buffered (partial characters included), then stop. After
        ``timeout`` seconds what is left is dropped (and counted)."""
        if self._closed:
            return
        for stream, decoder in self._decoders.items():
            self._add(stream, decoder.decode(b"", final=True))
        self._closed = self._closing = True
        self._wake.set()
        self.start()
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.warning(
                "gave up sending %d bytes of run output after %g s",
                self.buffered_bytes,
                timeout,
                extra={"action": "output_close_timeout"},
            )
        except Exception:
            log.exception("sending run output failed", extra={"action": "output_failed"})
        self.dropped_bytes += self.buffered_bytes  # nothing once all was sent
        self._pending.clear()
        self._pending_bytes = 0
        self._in_flight = []

    # -- buffering ---------------------------------------------------------------------

    def _add(self, stream: str, text: str) -> None:
        if not text:
            return
        data = text.encode()
        tail = self._pending[-1] if self._pending else None
        if tail and tail.stream == stream and tail.size + len(data) <= self._chunk_bytes:
            tail.parts.append(text)  # small writes share a chunk
            tail.size += len(data)
            self._pending_bytes += len(data)
        else:
            start = 0
            while start < len(data):
                end = min(start + self._chunk_bytes, len(data))
                while end < len(data) and data[end] & 0xC0 == 0x80:
                    end -= 1  # never cut inside a character
                piece = data[start:end]
                self._pending.append(_Chunk(self._next_seq, stream, piece.decode(), len(piece)))
                self._next_seq += 1
                self._pending_bytes += len(piece)
                start = end
        self._trim()
        if self._pending_bytes >= self._batch_bytes:
            self._wake.set()

    def _take_batch(self) -> list[_Chunk]:
        batch: list[_Chunk] = []
        size = 0
        while self._pending and len(batch) < MAX_BATCH_CHUNKS:
            chunk = self._pending[0]
            if batch and size + chunk.size > self._batch_bytes:
                break
            batch.append(self._pending.popleft())
            size += chunk.size
            self._pending_bytes -= chunk.size
        return batch

    # -- sending -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(base=self._interval, cap=min(_RETRY_CAP, 40 * self._interval))
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                self._wake.clear()
            while self._pending:
                if not await self._send_batch():
                    await asyncio.sleep(backoff.next_delay())
                    continue
                backoff.reset()
            if self._closing:
                return

    async def _send_batch(self) -> bool:
        """Post the next batch; False when it should be tried again later."""
        batch = self._in_flight = self._take_batch()
        size = sum(chunk.size for chunk in batch)
        try:
            await self._send([chunk.body() for chunk in batch])
        except Exception as exc:
            self._in_flight = []
            if _never_sent(exc):
                self.dropped_bytes += size
                log.warning(
                    "the server refused %d bytes of run output: %s",
                    size,
                    exc,
                    extra={"action": "output_refused"},
                )
                return True
            self._retry_log.failed(str(exc) or type(exc).__name__)
            self._pending.extendleft(reversed(batch))  # oldest first again
            self._pending_bytes += size
            self._trim()
            return False
        self._in_flight = []
        self.sent_bytes += size
        self._retry_log.recovered()
        return True

    def _trim(self) -> None:
        """Past max_buffered, drop the oldest unsent chunks."""
        while self._pending_bytes > self._max_buffered and self._pending:
            dropped = self._pending.popleft()
            self._pending_bytes -= dropped.size
            self.dropped_bytes += dropped.size
