"""Retry pacing: full-jitter exponential backoff, a jittered period, and a retry log that
says one line per retry window instead of one per attempt."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

BASE = 0.5
CAP = 30.0
LOG_WINDOW = 30.0


class Backoff:
    """Full-jitter exponential backoff: the n-th delay (from 0) is uniform in
    ``[0, min(cap, base * 2**n)]``, so many daemons retrying after one outage spread out
    instead of arriving together. :meth:`reset` after a success."""

    def __init__(
        self,
        base: float = BASE,
        cap: float = CAP,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rng = rng

    def ceiling(self) -> float:
        """The largest delay the next call may return."""
        return min(self.cap, self.base * 2.0 ** min(self.attempts, 64))

    def next_delay(self) -> float:
        delay = self._rng() * self.ceiling()
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


def jittered(period: float, spread: float = 0.2, rng: Callable[[], float] = random.random) -> float:
    """``period`` shortened by up to ``spread`` of itself, uniformly: daemons spread their
    heartbeats out, and none ever waits longer than ``period`` (so work found by polling is
    claimed within the interval)."""
    return period * (1 - spread * rng())


class RetryLog:
    """Logs a failing operation once when it starts failing, then at most once per
    ``window`` seconds (with the attempt count), and once when it recovers."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        window: float = LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._what = what
        self._window = window
        self._clock = clock
        self.failures = 0
        self._last_logged: float | None = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self._window:
            return
        self._last_logged = now
        self._log.warning(
            "%s (%d attempt%s): %s",
            self._what,
            self.failures,
            "" if self.failures == 1 else "s",
            reason,
            extra={"action": "retrying", "attempts": self.failures},
        )

    def recovered(self) -> None:
        if self.failures:
            self._log.info(
                "%s: recovered after %d failed attempt%s",
                self._what,
                self.failures,
                "" if self.failures == 1 else "s",
                extra={"action": "recovered", "attempts": self.failures},
            )
        self.failures = 0
        self._last_logged = None
