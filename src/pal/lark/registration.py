"""Creating a Lark app by QR scan: the device-flow app registration (lark.md §4).

An RFC 8628-style flow on Lark's *accounts* host, ``POST {accounts}/oauth/v1/app/registration``
with a form body whose ``action`` picks the step:

1. ``init``: the platform lists ``supported_auth_methods``; ``client_secret`` must be one.
2. ``begin`` (``archetype=PersonalAgent``, ``auth_method=client_secret``): a ``device_code``
   and a ``verification_uri_complete`` to show as a QR code or a link, the poll ``interval``
   and the expiry (``expire_in``, ``expires_in`` in older versions).
3. ``poll`` every ``interval`` seconds until the person who scanned has created the app:
   ``authorization_pending`` (go on), ``slow_down`` (5 s more), ``access_denied`` (refused),
   ``expired_token``/``invalid_grant`` (start over), or ``client_id`` and ``client_secret``:
   the new app's App ID and App Secret. A ``tenant_brand`` of ``lark`` without credentials
   moves the polling to Lark's host (once).

Errors come back as HTTP 400 with a JSON body, so the status is not read, only the body.
Plain async httpx, like :mod:`pal.lark.rest`; no message ever holds the secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from pal.lark import FEISHU_DOMAIN, LARK_DOMAIN

REGISTRATION_PATH = "/oauth/v1/app/registration"
FEISHU_ACCOUNTS = "https://accounts.feishu.cn"
LARK_ACCOUNTS = "https://accounts.larksuite.com"
DEFAULT_INTERVAL = 5.0
DEFAULT_EXPIRES = 600.0
SLOW_DOWN_STEP = 5.0
SOURCE = "python-sdk/pal"  # what the official SDK sends with a named source


class RegistrationError(Exception):
    """The platform ended the registration: its ``error`` code and description."""

    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class RegistrationDenied(RegistrationError):
    """The person who scanned refused to create the app (``access_denied``)."""


class RegistrationExpired(RegistrationError):
    """The code expired before the app was created (``expired_token``, ``invalid_grant``, or
    the expiry passed while polling)."""


class RegistrationUnreachable(Exception):
    """The accounts host could not be reached, or did not answer with JSON."""


@dataclass(frozen=True)
class Registration:
    """A begun registration: show ``url`` (as a QR code or a link) until ``expires_in``."""

    device_code: str
    user_code: str
    url: str
    interval: float
    expires_in: float


@dataclass(frozen=True)
class RegisteredApp:
    """The app Lark created. ``domain`` is its Open Platform origin (for lark.json);
    ``user_open_id`` is the open_id, in this app, of the person who scanned."""

    app_id: str
    app_secret: str
    domain: str
    tenant_brand: str | None
    user_open_id: str | None


def accounts_origin(domain: str) -> str:
    """The accounts host that registers apps for the Open Platform ``domain``; any other
    origin (a test's fake platform) serves both on one origin."""
    return {FEISHU_DOMAIN: FEISHU_ACCOUNTS, LARK_DOMAIN: LARK_ACCOUNTS}.get(domain, domain)


class AppRegistration:
    """One device flow against ``domain``'s accounts host; ``http`` is closed by
    :meth:`aclose` only when made here; ``sleep`` and ``clock`` are the test seams."""

    def __init__(
        self,
        domain: str = FEISHU_DOMAIN,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = domain.rstrip("/")
        self.accounts = accounts_origin(self.domain)
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def begin(self, *, name: str | None = None, desc: str | None = None) -> Registration:
        """Steps ``init`` and ``begin``; ``name`` and ``desc`` prefill the app's creation page."""
        init = await self._post({"action": "init", "archetype": "PersonalAgent"})
        methods = init.get("supported_auth_methods") or []
        if "client_secret" not in methods:
            raise RegistrationError(
                "unsupported_auth_method",
                "Lark does not offer App Secrets for new apps here; create the app in the "
                "developer console and paste its App ID and App Secret instead",
            )
        begun = await self._post(
            {
                "action": "begin",
                "archetype": "PersonalAgent",
                "auth_method": "client_secret",
                "request_user_info": "open_id tenant_brand",
            }
        )
        device_code, uri = begun.get("device_code"), begun.get("verification_uri_complete")
        if not isinstance(device_code, str) or not device_code or not isinstance(uri, str):
            raise RegistrationError(
                str(begun.get("error") or "invalid_response"),
                str(begun.get("error_description") or "no device_code in Lark's answer"),
            )
        expires = begun.get("expire_in", begun.get("expires_in"))
        return Registration(
            device_code=device_code,
            user_code=str(begun.get("user_code") or ""),
            url=_qr_url(uri, name=name, desc=desc),
            interval=_seconds(begun.get("interval"), DEFAULT_INTERVAL),
            expires_in=_seconds(expires, DEFAULT_EXPIRES),
        )

    async def wait(
        self,
        registration: Registration,
        on_status: Callable[[str], None] | None = None,
    ) -> RegisteredApp:
        """Poll until the app exists (or the flow ends with a :class:`RegistrationError`).
        ``on_status`` hears ``"pending"``, ``"slow_down"`` and ``"domain_switched"``. A poll
        that gets no answer is tried again at the next interval."""
        deadline = self._clock() + registration.expires_in
        interval = registration.interval
        switched = False
        brand: str | None = None
        while self._clock() < deadline:
            try:
                answer = await self._post(
                    {"action": "poll", "device_code": registration.device_code}
                )
            except RegistrationUnreachable:
                await self._sleep(interval)
                continue
            raw = answer.get("user_info")
            user_info: dict[str, Any] = raw if isinstance(raw, dict) else {}
            brand = user_info.get("tenant_brand") or brand
            app_id, secret = answer.get("client_id"), answer.get("client_secret")
            if isinstance(app_id, str) and app_id and isinstance(secret, str) and secret:
                open_id = user_info.get("open_id")
                lark = self.domain == FEISHU_DOMAIN and brand == "lark"
                return RegisteredApp(
                    app_id=app_id,
                    app_secret=secret,
                    domain=LARK_DOMAIN if lark else self.domain,
                    tenant_brand=brand if isinstance(brand, str) else None,
                    user_open_id=open_id if isinstance(open_id, str) else None,
                )
            if brand == "lark" and not switched:
                switched = True
                if self.accounts == FEISHU_ACCOUNTS:
                    self.accounts = LARK_ACCOUNTS
                _notify(on_status, "domain_switched")
                continue
            error = str(answer.get("error") or "")
            description = str(answer.get("error_description") or "")
            if error == "authorization_pending":
                _notify(on_status, "pending")
            elif error == "slow_down":
                interval += SLOW_DOWN_STEP
                _notify(on_status, "slow_down")
            elif error == "access_denied":
                raise RegistrationDenied(error, description)
            elif error in ("expired_token", "invalid_grant"):
                raise RegistrationExpired(error, description)
            else:
                raise RegistrationError(error or "invalid_response", description)
            await self._sleep(interval)
        raise RegistrationExpired("expired_token", "the code expired while waiting")

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        url = self.accounts + REGISTRATION_PATH
        try:
            response = await self._http.post(
                url,
                content=urlencode(form),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise RegistrationUnreachable(f"POST {url} failed: {type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RegistrationUnreachable(
                f"POST {url} answered HTTP {response.status_code} without JSON "
                "(is the domain right?)"
            )
        return answer


def _qr_url(uri: str, *, name: str | None, desc: str | None) -> str:
    """``uri`` with the query the official SDK adds, and the prefill of the app's page."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("from", "tp", "source")]
    query += [("from", "sdk"), ("tp", "sdk"), ("source", SOURCE)]
    if name:
        query.append(("name", name))
    if desc:
        query.append(("desc", desc))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return default
    return float(value)


def _notify(on_status: Callable[[str], None] | None, status: str) -> None:
    if on_status is not None:
        on_status(status)
