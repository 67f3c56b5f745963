"""A TCP proxy between a daemon and its server that a test can cut and restore.

It runs its own asyncio loop on a thread, so synchronous tests drive it with plain calls:
``cut("socket")`` resets the daemon's WebSocket (``GET /api/daemon/ws``) and refuses new
ones, ``cut("all")`` does the same to every connection (the network is gone), ``restore()``
lets connections through again. A connection's kind is read from its first request line.
``refused`` counts the connections turned away per kind, so a test can wait until the daemon
has noticed the cut and tried again.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["socket", "http"]
Cut = Literal["socket", "all"]


@dataclass(eq=False)
class _Link:
    kind: Kind
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def abort(self) -> None:
        """Reset both sides at once (RST), as a dropped network looks to each end."""
        self.client.transport.abort()
        self.upstream.transport.abort()


class TcpProxy:
    """``127.0.0.1:<port>`` forwarded to ``127.0.0.1:<target_port>``; see the module docstring."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refused: Counter[Kind] = Counter()
        self.accepted: Counter[Kind] = Counter()
        self._cut: Cut | None = None
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the proxy did not start")
        return self

    def cut(self, what: Cut) -> None:
        """Reset the connections of that kind (``all``: every one) and refuse new ones."""
        self._call(self._set_cut, what)

    def restore(self) -> None:
        """Let every connection through again."""
        self._call(self._set_cut, None)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # -- on the proxy's loop ------------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise AssertionError("the proxy did not answer")

    def _blocked(self, kind: Kind) -> bool:
        return self._cut == "all" or (self._cut == "socket" and kind == "socket")

    def _set_cut(self, what: Cut | None) -> None:
        self._cut = what
        for link in list(self._links):
            if self._blocked(link.kind):
                link.abort()
                self._links.discard(link)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._serve(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for link in list(self._links):
                link.abort()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(65536)
        except ConnectionError:
            first = b""
        request_line = first.split(b"\r\n", 1)[0]
        kind: Kind = "socket" if b"/api/daemon/ws" in request_line else "http"
        if not first or self._blocked(kind):
            self.refused[kind] += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the server is down: the client sees its connection reset
            self.refused[kind] += 1
            writer.transport.abort()
            return
        self.accepted[kind] += 1
        link = _Link(kind, writer, up_writer)
        self._links.add(link)
        up_writer.write(first)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            link.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream or a reset; then close the other side too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
