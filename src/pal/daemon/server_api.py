"""The daemon's calls to the server: a small async httpx client.

Three kinds of failure, because the daemon reacts differently to each:

- :class:`Refused` (401): the computer's credential is wrong, rotated or revoked. Fatal:
  the daemon says so and exits; retrying would only hammer the server.
- :class:`Unreachable`: the request may not have reached the server or got no usable
  answer (connection refused, timeout, 502/503/504). Retry with backoff; every daemon call
  is safe to repeat (claims, acks, run starts and finishes are idempotent).
- :class:`ApiError`: any other 4xx/5xx, with the server's ``{"error": ...}`` message
  (409 for a claim someone else holds).
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, cast

import httpx

import pal

# 429: too many failed authentications from this address (server/auth_failures.py): wait.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ServerError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(ServerError):
    """401: the server does not accept this computer's credential."""


class Unreachable(ServerError):
    """No usable answer: worth retrying later."""


class ApiError(ServerError):
    """The server answered with an error ``status`` (not 401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_message(response: httpx.Response) -> str:
    """The server's ``{"error": ...}`` message, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return cast(str, body["error"])
    text = response.text.strip()[:200]
    return text or f"HTTP {response.status_code}"


def transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ServerApi:
    """One computer's view of the server. ``credential`` is the API key, or
    ``<computer_id>:<computer_secret>`` for a legacy daemon (settable after registering)."""

    def __init__(
        self,
        base_url: str,
        credential: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"user-agent": f"pal-daemon/{pal.__version__}"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.credential}"} if self.credential else {}

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The raw answer, whatever its status; :class:`Unreachable` on transport errors."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            return await self._http.request(
                method,
                path,
                params=params,
                content=content,
                headers={**(headers or {}), **self.auth_headers()},
                **extra,
            )
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the server at {self.base_url}: {transport_reason(exc)}"
            ) from None

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A JSON call: the answer's JSON object, or one of this module's errors."""
        extra: dict[str, Any] = {} if body is None else {"json": body}
        try:
            response = await self._http.request(
                method, path, params=params, headers=self.auth_headers(), **extra
            )
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the server at {self.base_url}: {transport_reason(exc)}"
            ) from None
        status = response.status_code
        if status == 401:
            raise Refused(error_message(response))
        if status in RETRYABLE_STATUS:
            raise Unreachable(
                f"the server at {self.base_url} answered {status}: {error_message(response)}"
            )
        if status >= 400:
            raise ApiError(status, error_message(response))
        try:
            answer = response.json()
        except ValueError:
            raise Unreachable(f"the server answered {status} without JSON") from None
        if not isinstance(answer, dict):
            raise Unreachable(f"the server answered {status} with unexpected JSON")
        return answer

    # -- the daemon protocol (docs/daemon.md) ----------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self.call("GET", "/health")

    async def connect(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "/api/computers/connect", body)

    async def register_legacy(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "/api/daemons", body)

    async def heartbeat(
        self, computer_id: str, daemon_id: str, agents: list[str]
    ) -> dict[str, Any]:
        return await self.call(
            "POST",
            f"/api/computers/{computer_id}/heartbeat",
            {"daemon_id": daemon_id, "agents": agents},
        )

    async def pending(
        self, agent: str, *, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        answer = await self.call(
            "GET",
            "/api/deliveries",
            params={"agent": agent, "status": "pending", "after": after, "limit": limit},
        )
        return cast(list[dict[str, Any]], answer["deliveries"])

    async def claim(self, delivery_id: int, daemon_id: str) -> dict[str, Any]:
        answer = await self.call(
            "POST", f"/api/deliveries/{delivery_id}/claim", {"daemon_id": daemon_id}
        )
        return cast(dict[str, Any], answer["delivery"])

    async def fail(
        self, delivery_id: int, daemon_id: str, attempt: int, error: str, *, retry: bool
    ) -> dict[str, Any]:
        body = {"daemon_id": daemon_id, "attempt": attempt, "error": error, "retry": retry}
        answer = await self.call("POST", f"/api/deliveries/{delivery_id}/fail", body)
        return cast(dict[str, Any], answer["delivery"])

    async def ensure_session(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/api/sessions", body)
        return cast(dict[str, Any], answer["session"])

    async def start_run(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/api/runs", body)
        return cast(dict[str, Any], answer["run"])

    async def finish_run(self, run_id: int, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", f"/api/runs/{run_id}/finish", body)
        return cast(dict[str, Any], answer["run"])
