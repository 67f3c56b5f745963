"""Failed authentication, limited per client address (docs/security.md).

Every wrong admin token, computer API key (HTTP or the daemon socket) and workbench sign-in
takes one token from its address's bucket of :data:`LIMIT`; a token comes back every
``WINDOW / LIMIT`` seconds. An address with an empty bucket gets 429 with ``Retry-After`` for
every attempt that carries a credential, before the credential is checked, so guessing goes
no faster than one try per refill. Requests that authenticate are never counted, and one
address's failures do not touch another's: a daemon or a browser with the right credential
is never slowed by someone else's guessing.

The address is the one the server sees (``scope["client"]``): behind a proxy, run uvicorn
with ``--forwarded-allow-ips`` so that it is the client's, not the proxy's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import Scope

from pal.errors import PalError

LIMIT = 20
"""Failed attempts an address may make in a burst."""
WINDOW = 60.0
"""Seconds in which a whole burst comes back."""
MAX_ADDRESSES = 10_000
"""Addresses remembered at most (the oldest are forgotten first)."""


class TooManyFailures(PalError):
    """429: this address failed to authenticate too often; ``retry_after`` seconds to wait."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client_address(scope: Scope) -> str:
    """The address a request or WebSocket came from, as the server sees it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthFailures:
    """A token bucket of failed authentications per client address."""

    def __init__(
        self,
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.refill = window / limit
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.limit), now))
        return min(float(self.limit), tokens + (now - at) / self.refill)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again; None when it may try now."""
        tokens = self._tokens(address, self.clock())
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) * self.refill))

    def record(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        now = self.clock()
        tokens = self._tokens(address, now) - 1
        self._buckets.pop(address, None)  # re-insert: the dict stays oldest-first
        self._buckets[address] = (max(tokens, 0.0), now)
        if len(self._buckets) > self.max_addresses:
            self._forget(now)

    def _forget(self, now: float) -> None:
        for address in [a for a in self._buckets if self._tokens(a, now) >= self.limit]:
            del self._buckets[address]
        while len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]

    def check(self, address: str) -> None:
        """:class:`TooManyFailures` when ``address`` must wait before trying again."""
        wait = self.retry_after(address)
        if wait is not None:
            raise TooManyFailures(
                f"too many failed authentications from {address}: wait {wait} s "
                "(Retry-After) and check the admin token or API key you send",
                wait,
            )
