"""Lark's REST API for one bot (lark.md §3): tenant token, bot identity, messages, reactions.

Plain async httpx, not the SDK (its token fetch is synchronous and blocks the loop, and its
raw calls do not parse bodies). The tenant access token is cached per :class:`LarkRest` and
fetched again ``REFRESH_MARGIN`` seconds before it expires; a call answered with an
invalid-token code fetches a new token and is retried once.

Errors: :class:`LarkApiError` (Lark answered with a non-zero ``code``) and
:class:`LarkUnreachable` (no answer). Neither message ever holds the app secret or a token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
TOKEN_INVALID = frozenset({99991663, 99991664, 99991665, 99991666, 99991668})
RECEIVE_ID_TYPES = ("chat_id", "open_id", "union_id", "user_id", "email")
REFRESH_MARGIN = 600.0  # the SDK's margin: a fresh token 10 minutes before the old expires


class LarkApiError(Exception):
    """Lark refused a call: its ``code`` and ``msg``, and the HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        self.code = code
        self.msg = msg
        self.status = status
        super().__init__(f"Lark error {code}: {msg} (HTTP {status})")


class LarkUnreachable(Exception):
    """Lark could not be reached (connection refused, timeout, a reply that is not Lark's)."""


class LarkRest:
    """One bot's REST client; ``http`` is closed by :meth:`aclose` only when made here."""

    def __init__(
        self,
        domain: str,
        app_id: str,
        app_secret: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = domain.rstrip("/")
        self.app_id = app_id
        self._secret = app_secret
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -- token -----------------------------------------------------------------------------

    async def token(self, *, refresh: bool = False) -> str:
        """The tenant access token, fetched when none is cached, when it expires within
        ``REFRESH_MARGIN`` (or half its lifetime, for short ones), or when ``refresh``."""
        async with self._token_lock:
            if refresh or self._token is None or self._clock() >= self._token_expires:
                body = {"app_id": self.app_id, "app_secret": self._secret}
                answer = await self._send("POST", TOKEN_PATH, json_body=body)
                token, expire = answer.get("tenant_access_token"), answer.get("expire")
                if not isinstance(token, str) or not token or not isinstance(expire, int):
                    raise LarkApiError(-1, "the token answer has no tenant_access_token")
                margin = min(REFRESH_MARGIN, expire / 2)
                self._token, self._token_expires = token, self._clock() + expire - margin
            return self._token

    # -- calls -----------------------------------------------------------------------------

    async def bot_info(self) -> dict[str, Any]:
        """``{"open_id", "app_name"}`` of this bot (``GET /open-apis/bot/v3/info``)."""
        answer = await self._call("GET", "/open-apis/bot/v3/info")
        bot = answer.get("bot") or {}
        return {"open_id": bot.get("open_id"), "app_name": bot.get("app_name")}

    async def send(
        self, receive_id: str, receive_id_type: str, text: str, uuid: str | None = None
    ) -> dict[str, Any]:
        """Send ``text`` to a chat or user; Lark's message (``message_id``, ``chat_id``, ...)."""
        if receive_id_type not in RECEIVE_ID_TYPES:
            raise ValueError(f"receive_id_type must be one of {', '.join(RECEIVE_ID_TYPES)}")
        body: dict[str, Any] = {
            "receive_id": receive_id,
            "msg_type": "text",
            "content": json.dumps({"text": text}, ensure_ascii=False),
        }
        if uuid:
            body["uuid"] = uuid
        answer = await self._call(
            "POST",
            "/open-apis/im/v1/messages",
            params={"receive_id_type": receive_id_type},
            json_body=body,
        )
        return dict(answer.get("data") or {})

    async def reply(
        self, message_id: str, text: str, uuid: str | None = None, in_thread: bool = False
    ) -> dict[str, Any]:
        """Reply to ``message_id`` (in a thread under it when ``in_thread``); Lark's message."""
        body: dict[str, Any] = {
            "msg_type": "text",
            "content": json.dumps({"text": text}, ensure_ascii=False),
            "reply_in_thread": in_thread,
        }
        if uuid:
            body["uuid"] = uuid
        answer = await self._call(
            "POST", f"/open-apis/im/v1/messages/{_segment(message_id)}/reply", json_body=body
        )
        return dict(answer.get("data") or {})

    async def add_reaction(self, message_id: str, emoji: str) -> str:
        """Add the reaction ``emoji`` (``Typing``, ``OK``, ...) as the bot; its reaction_id."""
        answer = await self._call(
            "POST",
            f"/open-apis/im/v1/messages/{_segment(message_id)}/reactions",
            json_body={"reaction_type": {"emoji_type": emoji}},
        )
        reaction_id = (answer.get("data") or {}).get("reaction_id")
        if not isinstance(reaction_id, str):
            raise LarkApiError(-1, "the reaction answer has no reaction_id")
        return reaction_id

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        """Remove a reaction the bot added (``reaction_id`` from :meth:`add_reaction`)."""
        await self._call(
            "DELETE",
            f"/open-apis/im/v1/messages/{_segment(message_id)}/reactions/{_segment(reaction_id)}",
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any]:
        """An authenticated call; an invalid token is replaced once and the call retried."""
        token = await self.token()
        try:
            return await self._send(method, path, params=params, json_body=json_body, token=token)
        except LarkApiError as exc:
            if exc.code not in TOKEN_INVALID:
                raise
        token = await self.token(refresh=True)
        return await self._send(method, path, params=params, json_body=json_body, token=token)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.request(
                method,
                self.domain + path,
                params=params,
                json=json_body,
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise LarkUnreachable(
                f"{method} {self.domain}{path} failed: {type(exc).__name__}"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise LarkUnreachable(
                f"{method} {self.domain}{path} answered HTTP {response.status_code} "
                "without Lark's JSON (is the domain right?)"
            )
        if answer["code"] != 0:
            raise LarkApiError(
                answer["code"], self._scrub(str(answer.get("msg") or "")), response.status_code
            )
        return answer

    def _scrub(self, text: str) -> str:
        """``text`` without the secret or the token, should Lark ever echo them."""
        for secret in (self._secret, self._token):
            if secret:
                text = text.replace(secret, "(redacted)")
        return text[:500]


def _segment(value: str) -> str:
    """``value`` as one path segment (ids never hold a slash; refuse one that does)."""
    if not value or "/" in value or "?" in value or "#" in value:
        raise ValueError(f"not a Lark id: {value!r}")
    return value
