"""Creating a Lark app by QR scan (lark.md §4): pal's device-flow client against the fake
platform, and the fake checked against the real SDK's ``aregister_app``."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pal.lark import FEISHU_DOMAIN, LARK_DOMAIN
from pal.lark.registration import (
    REGISTRATION_PATH,
    AppRegistration,
    RegistrationDenied,
    RegistrationError,
    RegistrationExpired,
    RegistrationUnreachable,
    accounts_origin,
)
from tests.e2e.conftest import free_port
from tests.fakes.lark_platform import FakeLarkPlatform


@pytest.fixture
async def fake():
    async with FakeLarkPlatform(registration_interval=2, registration_expires=300) as fake:
        yield fake


class Sleeps:
    """The flow's ``sleep``: records each wait and runs ``then`` after the ``at``-th."""

    def __init__(self, at: int = 1, then=None) -> None:
        self.seconds: list[float] = []
        self.at, self.then = at, then

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        if len(self.seconds) == self.at and self.then is not None:
            self.then()


async def test_a_scanned_registration_gives_the_new_apps_credentials(fake):
    sleeps = Sleeps(then=lambda: fake.approve_registration(app_secret="new-secret", user="Bob"))
    flow = AppRegistration(fake.origin, sleep=sleeps)
    try:
        registration = await flow.begin(name="Codex Agent", desc="writes code")
        app = await flow.wait(registration)
    finally:
        await flow.aclose()

    [reg] = fake.registrations
    assert registration.device_code == reg.device_code
    assert (registration.interval, registration.expires_in) == (2.0, 300.0)
    url = urlsplit(registration.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{fake.origin}/page/launcher"
    assert parse_qs(url.query) == {
        "user_code": [reg.user_code],
        "from": ["sdk"],
        "tp": ["sdk"],
        "source": ["python-sdk/pal"],
        "name": ["Codex Agent"],
        "desc": ["writes code"],
    }
    assert sleeps.seconds == [2.0]  # one pending poll, one wait, then the credentials
    assert app.app_id == reg.app_id and app.app_secret == "new-secret"
    assert app.domain == fake.origin and app.tenant_brand == "feishu"
    assert app.user_open_id == fake.user("Bob").open_id(app.app_id)
    assert [f["action"] for f in fake.registration_forms] == ["init", "begin", "poll", "poll"]


async def test_slow_down_adds_five_seconds_to_the_interval(fake):
    def slow_then_scan() -> None:
        fake.registration().slow_down = 1

    sleeps = Sleeps(then=slow_then_scan)
    sleeps2 = Sleeps(at=2, then=lambda: fake.approve_registration())

    async def both(seconds: float) -> None:
        await sleeps(seconds)
        await sleeps2(seconds)

    flow = AppRegistration(fake.origin, sleep=both)
    registration = await flow.begin()
    statuses: list[str] = []
    await flow.wait(registration, on_status=statuses.append)
    await flow.aclose()
    assert sleeps.seconds == [2.0, 7.0]
    assert statuses == ["pending", "slow_down"]


@pytest.mark.parametrize(
    ("end", "error"),
    [("deny_registration", RegistrationDenied), ("expire_registration", RegistrationExpired)],
)
async def test_a_refused_or_expired_registration_ends_the_flow(fake, end, error):
    flow = AppRegistration(fake.origin, sleep=Sleeps(then=lambda: getattr(fake, end)()))
    registration = await flow.begin()
    with pytest.raises(error):
        await flow.wait(registration)
    await flow.aclose()
    assert fake.apps == {}


async def test_the_code_expires_when_the_deadline_passes_while_polling(fake):
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    flow = AppRegistration(fake.origin, sleep=sleep, clock=lambda: now[0])
    registration = await flow.begin()
    with pytest.raises(RegistrationExpired):
        await flow.wait(registration)
    await flow.aclose()
    assert fake.registration().polls == 150  # 300 s at 2 s


async def test_a_platform_without_client_secret_apps_is_refused_before_begin(fake):
    fake.registration_methods = ["private_key_jwt"]
    flow = AppRegistration(fake.origin)
    with pytest.raises(RegistrationError, match="unsupported_auth_method"):
        await flow.begin()
    await flow.aclose()
    assert [f["action"] for f in fake.registration_forms] == ["init"]


async def test_an_unreachable_accounts_host_is_reported():
    flow = AppRegistration(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistrationUnreachable, match="ConnectError"):
        await flow.begin()
    await flow.aclose()


def test_accounts_origin_of_each_platform():
    assert accounts_origin(FEISHU_DOMAIN) == "https://accounts.feishu.cn"
    assert accounts_origin(LARK_DOMAIN) == "https://accounts.larksuite.com"
    assert accounts_origin("http://127.0.0.1:4190") == "http://127.0.0.1:4190"


async def test_a_lark_tenant_moves_polling_to_larksuite_and_gives_the_lark_domain():
    """The real hosts, through a MockTransport: a poll answered with tenant_brand lark and no
    credentials moves to accounts.larksuite.com at once; a lost poll is tried again."""
    seen: list[tuple[str, str]] = []
    polls = iter(["lark", "lost", "done"])

    def handler(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        seen.append((request.url.host, form["action"]))
        assert request.url.path == REGISTRATION_PATH
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        if form["action"] == "init":
            return httpx.Response(200, json={"supported_auth_methods": ["client_secret"]})
        if form["action"] == "begin":
            uri = "https://open.feishu.cn/page/launcher?user_code=AB"
            body = {"device_code": "dc", "verification_uri_complete": uri, "expires_in": 60}
            return httpx.Response(200, json=body)
        step = next(polls)
        if step == "lark":
            return httpx.Response(400, json={"user_info": {"tenant_brand": "lark"}})
        if step == "lost":
            raise httpx.ConnectError("lost")
        body = {"client_id": "cli_l", "client_secret": "s", "user_info": {"open_id": "ou_me"}}
        return httpx.Response(200, content=json.dumps(body))

    sleeps = Sleeps()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        flow = AppRegistration(FEISHU_DOMAIN, http=http, sleep=sleeps)
        registration = await flow.begin()
        assert (registration.interval, registration.expires_in) == (5.0, 60.0)
        app = await flow.wait(registration)
    assert seen == [
        ("accounts.feishu.cn", "init"),
        ("accounts.feishu.cn", "begin"),
        ("accounts.feishu.cn", "poll"),
        ("accounts.larksuite.com", "poll"),
        ("accounts.larksuite.com", "poll"),
    ]
    assert sleeps.seconds == [5.0]  # only after the lost poll
    assert (app.app_id, app.domain, app.tenant_brand) == ("cli_l", LARK_DOMAIN, "lark")
    assert app.user_open_id == "ou_me"


# -- the fake against the real SDK -------------------------------------------------------------


async def test_sdk_aregister_app_creates_an_app_on_the_fake():
    from lark_oapi.scene.registration import aregister_app

    async with FakeLarkPlatform(registration_interval=0.05) as fake:
        shown: list[dict] = []

        def on_qr_code(info: dict) -> None:
            shown.append(info)
            fake.approve_registration(app_id="cli_sdk_reg", app_secret="sdk-made")

        result = await aregister_app(on_qr_code=on_qr_code, domain=fake.origin, source="pal")
    assert result == {
        "client_id": "cli_sdk_reg",
        "client_secret": "sdk-made",
        "user_info": {
            "open_id": fake.user("Alice").open_id("cli_sdk_reg"),
            "tenant_brand": "feishu",
        },
    }
    [info] = shown
    assert info["url"].startswith(f"{fake.origin}/page/launcher?user_code=")
    assert "source=python-sdk%2Fpal" in info["url"]
    assert fake.registration_forms[1] == {
        "action": "begin",
        "archetype": "PersonalAgent",
        "auth_method": "client_secret",
        "request_user_info": "open_id",
    }


async def test_sdk_aregister_app_reports_a_refusal_from_the_fake():
    from lark_oapi.scene.registration import aregister_app
    from lark_oapi.scene.registration.errors import AppAccessDeniedError

    async with FakeLarkPlatform(registration_interval=0.05) as fake:
        with pytest.raises(AppAccessDeniedError):
            await aregister_app(
                on_qr_code=lambda info: fake.deny_registration(), domain=fake.origin
            )
