"""Child processes of ``pal up``: start, capture output, stop with a forwarded signal.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches only
``pal up``, which forwards it in order. Its output (stdout and stderr together) is kept as a
short tail for error reports, and echoed to stderr with a ``name | `` prefix once
:meth:`Child.show_output` is called.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from types import FrameType

TAIL_LINES = 30


@dataclass(frozen=True)
class ExitEvent:
    """A child exited."""

    name: str


class Events:
    """What ``pal up`` waits for: signal numbers (from its handlers) and child exits.

    A :class:`queue.SimpleQueue` because its ``put`` is reentrant, so a signal handler may
    call it at any point of the main thread.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int | ExitEvent] = queue.SimpleQueue()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put(signum)

    def put(self, event: int | ExitEvent) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> int | ExitEvent | None:
        """The next event, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    _lines: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _live: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None
    _signalled: int | None = None

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str], events: Events) -> Child:
        """Start ``argv``; ``events`` gets an :class:`ExitEvent` when it exits."""
        group = {"process_group": 0} if os.name == "posix" else {}
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **group,  # type: ignore[call-overload]
        )
        child = cls(name, proc)
        child._pump = threading.Thread(target=child._read, name=f"{name}-output", daemon=True)
        child._pump.start()

        def watch() -> None:
            proc.wait()
            events.put(ExitEvent(name))

        threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
        return child

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            if self._live.is_set():
                try:
                    sys.stderr.write(f"{self.name} | {line}\n")
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def show_output(self) -> None:
        """Echo the child's output from now on."""
        self._live.set()

    def tail(self) -> str:
        """The child's last output lines, indented (waits briefly for its last output)."""
        if self._pump is not None:
            self._pump.join(timeout=2)
        return "\n".join(f"  {self.name} | {line}" for line in self._lines)

    def stop(self, signum: int, timeout: float, events: Events) -> None:
        """Send ``signum`` and wait up to ``timeout`` seconds for the exit; kill the child
        (its whole process group) after that, or at once when another signal arrives."""
        self._signalled = signum
        self._send(signum)
        try:
            self.proc.wait(timeout=0.05)
            return
        except subprocess.TimeoutExpired:
            pass
        waited = 0.0
        while self.running() and waited < timeout:
            event = events.get(timeout=0.1)
            waited += 0.1
            if isinstance(event, int):
                break
        if self.running():
            self._send(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        self.proc.wait()

    def _send(self, signum: int) -> None:
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def stopped_cleanly(self) -> bool:
        """Whether the child exited 0, or of the signal it was asked to stop with: killed by
        it, or exiting 128 + its number (how Python programs report a Ctrl-C)."""
        code = self.proc.poll()
        signalled = self._signalled
        return code == 0 or (signalled is not None and code in (-signalled, 128 + signalled))
