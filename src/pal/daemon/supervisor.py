"""Start a runtime's process, stream its output, and stop its whole tree.

:func:`spawn` starts one child with stdin at /dev/null (agent CLIs read an open stdin and
hang on it) and both output pipes read as they arrive, in raw byte chunks: nothing is
line-based, so megabyte lines, floods on both pipes at once and invalid UTF-8 cannot
stall the child. The child leads its own process tree (:mod:`pal.daemon.proctree`),
whose descendants a poller records every :data:`POLL_INTERVAL` seconds.

A run ends when its process exits: :meth:`Child.wait` then waits at most
:data:`PIPE_DRAIN_TIMEOUT` for the pipes to close, because a leaked grandchild may hold
them open for ever. :meth:`Child.kill` (on request) and :meth:`Child.reap` (after a normal
exit) stop the tree: the graceful signal, ``grace`` seconds, then a kill of everything
recorded, bounded in time whatever the processes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pal.daemon.proctree import Proc, ProcessTree, process_tree

log = logging.getLogger("pal.daemon")

PIPE_DRAIN_TIMEOUT = 2.0  # seconds to wait for the pipes to close once the process exited
POLL_INTERVAL = 0.5  # seconds between two records of the running tree
KILL_TIMEOUT = 5.0  # seconds after the grace period after which a kill gives up
_CHECK_INTERVAL = 0.05  # seconds between two looks at a tree that is going away

OnOutput = Callable[[str, bytes], None]
STREAMS = {1: "stdout", 2: "stderr"}


class CannotSpawn(Exception):
    """The process could not be started; ``message`` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Exit:
    """How a process ended: ``code`` for an exit, ``signal`` when a signal ended it (both
    None for a process that could not be killed and still runs)."""

    code: int | None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> Exit:
        return cls(None, -returncode) if returncode < 0 else cls(returncode)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "no exit (the process could not be killed)"


async def spawn(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    on_output: OnOutput,
    marker: str | None = None,
) -> Child:
    """Start ``argv`` in ``cwd`` with exactly ``env``; every chunk of its output goes to
    ``on_output(stream, data)`` as it arrives. ``marker`` is the run's ``PAL_RUN_ID`` (set
    in the child's environment): every process of this user carrying it (and the run's
    ``PAL_RUN_AUTH``, when ``env`` has one) belongs to this child's tree and is killed
    with it, so it must be unique to this child. Raises :class:`CannotSpawn`."""
    if not argv:
        raise CannotSpawn("nothing to run: the command is empty")
    tree = process_tree()
    reason = tree.refuse(argv)
    if reason:
        raise CannotSpawn(reason)
    child_env = dict(env)
    mark: dict[str, str] | None = None
    if marker:
        child_env["PAL_RUN_ID"] = marker
        mark = {"PAL_RUN_ID": marker}
        if env.get("PAL_RUN_AUTH"):
            mark["PAL_RUN_AUTH"] = env["PAL_RUN_AUTH"]
    loop = asyncio.get_running_loop()
    events = _Events(on_output)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: events,
            *argv,
            cwd=cwd,
            env=child_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            **tree.spawn_options(),
        )
    except (OSError, ValueError) as exc:
        raise CannotSpawn(_spawn_error(argv, cwd, exc)) from None
    child = Child(transport, events, tree, mark)
    tree.attach(child.pid)
    return child


def _spawn_error(argv: list[str], cwd: str, exc: OSError | ValueError) -> str:
    program = argv[0]
    if isinstance(exc, ValueError):  # e.g. a NUL character in an argument
        return f"cannot start {program}: {exc}"
    if not os.path.isdir(cwd):
        return f"cannot start {program}: the working directory {cwd} does not exist"
    if isinstance(exc, FileNotFoundError):
        return (
            f"cannot start {program}: no such program; install it, or configure the full "
            "path of its executable"
        )
    if isinstance(exc, PermissionError):
        return (
            f"cannot start {program}: permission denied; make it executable "
            f"(chmod +x {program}) and the directory {cwd} readable"
        )
    if exc.errno == errno.E2BIG:
        size = sum(len(arg.encode()) for arg in argv)
        return (
            f"cannot start {program}: its command line ({size} bytes) is too long for "
            "this system; the prompt is probably too big"
        )
    return f"cannot start {program}: {exc.strerror or exc}"


class _Events(asyncio.SubprocessProtocol):
    """Output chunks straight to ``on_output``; the exit and the closing of both pipes as
    events."""

    def __init__(self, on_output: OnOutput) -> None:
        self._on_output = on_output
        self._open = set(STREAMS)
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if isinstance(data, str):  # never for byte pipes; keeps the types honest
            data = data.encode()
        try:
            self._on_output(STREAMS.get(fd, "stdout"), data)
        except Exception:  # a broken consumer must not stop the reading (the child would block)
            log.exception("output handler failed", extra={"action": "output_handler_failed"})

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.drained.set()

    def process_exited(self) -> None:
        self.exited.set()


class Child:
    """A started process and its tree. ``pid`` is the process's (and on POSIX its process
    group's) id."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        events: _Events,
        tree: ProcessTree,
        mark: Mapping[str, str] | None,
    ) -> None:
        self.pid: int = transport.get_pid()
        self._transport = transport
        self._events = events
        self._tree = tree
        self._mark = mark
        self._known: list[Proc] = []  # descendants recorded while it ran
        self._lock = asyncio.Lock()  # one kill or reap at a time
        self._recording = asyncio.Lock()  # one update of _known at a time
        self._poller = asyncio.create_task(self._poll(), name=f"tree-poller-{self.pid}")
        self._done = asyncio.create_task(self._watch(), name=f"child-{self.pid}")

    @property
    def running(self) -> bool:
        return not self._events.exited.is_set()

    @property
    def descendants(self) -> list[Proc]:
        """The processes of the tree recorded so far (the child excluded)."""
        return list(self._known)

    async def wait(self) -> Exit:
        """The process has exited and its output is read (or abandoned, see the module)."""
        return await asyncio.shield(self._done)

    async def kill(self, grace: float) -> Exit:
        """Stop the process and its whole tree: the graceful signal, up to ``grace``
        seconds, then a kill. Safe to repeat, and after the process exited."""
        async with self._lock:
            await self._end_tree(grace)
        if self.running:
            return Exit(None)
        return await self.wait()

    async def reap(self, grace: float) -> int:
        """After the process exited: stop whatever it left running, as :meth:`kill` does.
        Returns how many processes were left."""
        await self.wait()
        async with self._lock:
            return await self._end_tree(grace)

    async def _watch(self) -> Exit:
        await self._events.exited.wait()
        try:
            await asyncio.wait_for(self._events.drained.wait(), PIPE_DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning(
                "pid %d exited, but a process it started keeps its output open: "
                "no longer reading it",
                self.pid,
                extra={"action": "output_abandoned", "pid": self.pid},
            )
        self._transport.close()
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        returncode = self._transport.get_returncode()
        return Exit.from_returncode(returncode if returncode is not None else 0)

    async def _poll(self) -> None:
        """Record the tree every POLL_INTERVAL seconds while the process runs."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events.exited.wait(), POLL_INTERVAL)
            if not self.running:
                return
            await self._record(with_mark=False)

    async def _record(self, *, with_mark: bool) -> list[Proc]:
        """Add the tree's processes now to the record, forget those that are gone;
        returns the record."""
        async with self._recording:
            running = self.running
            mark = self._mark if with_mark else None
            known = self._known

            def refresh() -> list[Proc]:
                found = {proc.pid: proc for proc in self._tree.find(self.pid, running, mark)}
                for proc in known:
                    found.setdefault(proc.pid, proc)
                return _alive(list(found.values()))  # zombies and reused pids out

            self._known = await asyncio.to_thread(refresh)
            return self._known

    async def _end_tree(self, grace: float) -> int:
        """Graceful signal, wait up to ``grace``, kill; returns how many processes were
        there at the start (the child itself included while it runs)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        procs = await self._record(with_mark=True)
        count = len(procs) + (1 if self.running else 0)
        if count:
            await asyncio.to_thread(self._tree.terminate, self.pid, self.running, procs)
            if not await self._gone(procs, start + grace):
                procs = await self._record(with_mark=True)  # anything new since
                await asyncio.to_thread(self._tree.kill, self.pid, self.running, procs)
                if not await self._gone(procs, start + grace + KILL_TIMEOUT):
                    log.warning(
                        "pid %d: its process tree survived a kill",
                        self.pid,
                        extra={"action": "kill_failed", "pid": self.pid},
                    )
        if not self.running:
            self._tree.close()
        return count

    async def _gone(self, procs: list[Proc], deadline: float) -> bool:
        """Wait until the child has exited and none of ``procs`` is alive, or ``deadline``
        (loop time); whether everything went."""
        loop = asyncio.get_running_loop()
        while True:
            left = await asyncio.to_thread(_alive, procs)
            if not left and not self.running:
                return True
            if loop.time() >= deadline:
                return False
            procs = left
            if self.running:  # wake up as soon as it exits
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._events.exited.wait(), _CHECK_INTERVAL)
            else:
                await asyncio.sleep(_CHECK_INTERVAL)


def _alive(procs: list[Proc]) -> list[Proc]:
    return [proc for proc in procs if proc.alive()]


class LineSplitter:
    """Bytes in, complete lines out (decoded UTF-8, invalid bytes as U+FFFD, without the
    line end). A line longer than ``max_line`` bytes is dropped whole and counted in
    ``dropped_lines``."""

    def __init__(self, on_line: Callable[[str], None], max_line: int = 16 * 1024 * 1024) -> None:
        self._on_line = on_line
        self._max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside a line that was too long
        self.dropped_lines = 0

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._add(data[start:])
                return
            self._add(data[start:end])
            if not self._skipping:
                self._emit()
            self._skipping = False
            self._buffer.clear()
            start = end + 1

    def close(self) -> None:
        """The stream ended: pass on a last line that had no line end."""
        if self._buffer and not self._skipping:
            self._emit()
        self._buffer.clear()
        self._skipping = False

    def _add(self, piece: bytes) -> None:
        if self._skipping or not piece:
            return
        if len(self._buffer) + len(piece) > self._max_line:
            self._buffer.clear()
            self._skipping = True
            self.dropped_lines += 1
            log.warning(
                "dropped an output line longer than %d bytes",
                self._max_line,
                extra={"action": "line_dropped"},
            )
            return
        self._buffer += piece

    def _emit(self) -> None:
        line = self._buffer.decode("utf-8", errors="replace").removesuffix("\r")
        try:
            self._on_line(line)
        except Exception:
            log.exception("line handler failed", extra={"action": "line_handler_failed"})
