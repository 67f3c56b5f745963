"""The settings page in a real browser (tests/web/conftest.py) against a real server: the
authorized Lark users (Access) and the Lark bots of lark.json, connected to the fake Lark Open
Platform (tests/fakes/lark_platform.py) in a thread of the test.

Each test writes the lark.json it needs (and empties it after); waits are Playwright's
auto-waiting ``expect`` assertions, always with a timeout; nothing sleeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ServerProcess, start_server
from tests.fakes.lark_platform import ThreadedFake
from tests.web.conftest import PHONE, Pages

pytestmark = pytest.mark.e2e

Shot = Callable[..., Path]
SECRET = "web-secret-VALUE-never-shown"
# A closed loopback port: a bot "there" keeps trying to connect and never reaches anything.
NOWHERE = "http://127.0.0.1:9"
CONNECT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("settings") / "home")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def lark_file(server: ServerProcess, http: httpx.Client) -> Iterator[Path]:
    """The server's lark.json; emptied (and applied) after the test."""
    path = server.home / "lark.json"
    yield path
    path.write_text('{"bots": []}')
    assert http.post("/api/lark/reload").status_code == 200


def write_bots(path: Path, *bots: dict[str, Any]) -> None:
    path.write_text(json.dumps({"bots": list(bots)}))


def users(http: httpx.Client) -> dict[str, str]:
    return {u["user_id"]: u["name"] for u in http.get("/api/lark-users").json()["users"]}


def test_authorize_a_lark_user_and_delete_it(
    page: Page, server: ServerProcess, http: httpx.Client, shot: Shot
) -> None:
    page.goto(f"{server.url}/#/settings")
    expect(page.locator('#nav a[data-nav="settings"]')).to_have_attribute("aria-current", "page")
    expect(page.locator('[data-testid="tab-access"]')).to_have_attribute("aria-selected", "true")
    user_id = page.locator('[data-testid="lark-user-id"]')
    name = page.locator('[data-testid="lark-user-name"]')

    # bad input: a clear message, nothing sent
    user_id.fill("on bob")
    name.fill("Bob")
    page.locator('[data-testid="add-lark-user"]').click()
    expect(page.locator("#toast")).to_contain_text("User ID “on bob” is not valid")
    expect(user_id).to_have_attribute("aria-invalid", "true")
    expect(user_id).to_be_focused()
    assert "on bob" not in users(http)

    # a name of only spaces is refused too
    user_id.fill("on_bob")
    name.fill("   ")
    page.locator('[data-testid="add-lark-user"]').click()
    expect(page.locator("#toast")).to_contain_text("Enter a name")
    assert "on_bob" not in users(http)

    name.fill("Bob")
    name.press("Enter")
    row = page.locator('#lark-users tr[data-user="on_bob"]')
    expect(row).to_contain_text("Bob")
    expect(page.locator("#toast")).to_contain_text("Authorized Bob (on_bob)")
    assert users(http)["on_bob"] == "Bob"
    expect(user_id).to_have_value("")
    expect(user_id).to_be_focused()

    # the same id again renames
    user_id.fill("on_bob")
    name.fill("Robert")
    page.locator('[data-testid="add-lark-user"]').click()
    expect(row).to_contain_text("Robert")
    expect(page.locator('#lark-users tbody tr[data-user="on_bob"]')).to_have_count(1)

    # a user added elsewhere shows up on the next poll (or reload)
    assert http.post("/api/lark-users", json={"user_id": "ou_carol", "name": "Carol"}).is_success
    expect(page.locator('#lark-users tr[data-user="ou_carol"]')).to_be_visible()
    shot(page, "access")

    page.locator('[data-testid="delete-user-on_bob"]').click()  # the confirm is accepted
    expect(row).to_have_count(0)
    assert "on_bob" not in users(http)
    assert http.delete("/api/lark-users/ou_carol").is_success


def test_lark_bots_show_their_state_and_events_live(
    page: Page, server: ServerProcess, http: httpx.Client, lark_file: Path, shot: Shot
) -> None:
    with ThreadedFake(ping_interval=1) as fake:
        fake.call(lambda f: f.add_app("cli_good", SECRET, name="Support"))
        write_bots(
            lark_file,
            {
                "app_id": "cli_good",
                "app_secret": SECRET,
                "label": "Support bot",
                "agent": "codex",
                "domain": fake.origin,
            },
            {"app_id": "cli_bad", "app_secret": "wrong-secret-value", "domain": fake.origin},
        )
        page.goto(f"{server.url}/#/settings?tab=lark")
        expect(page.locator('[data-testid="tab-lark"]')).to_have_attribute("aria-selected", "true")
        page.locator('[data-testid="reload-lark"]').click()
        expect(page.locator("#toast")).to_contain_text("lark.json reloaded: 2 bots")

        good = page.locator('#lark-bots tr[data-bot="cli_good"]')
        for text in ("Support bot", "cli_good", "codex", "web…(redacted)"):
            expect(good).to_contain_text(text)
        # the first connection loads the SDK's protobuf frames: slow on a busy machine
        expect(page.locator('[data-testid="state-cli_good"]')).to_have_text(
            "connected", timeout=CONNECT_MS
        )
        expect(page.locator('[data-testid="state-cli_bad"]')).to_have_text("failed")
        expect(page.locator('[data-testid="error-cli_bad"]')).to_contain_text(
            "Lark refused the long connection (code 10014"
        )
        expect(page.locator('[data-testid="tab-lark"]')).to_contain_text("1 failed")
        expect(page.locator('[data-testid="lark-config-error"]')).to_be_hidden()

        # a message to the bot arrives as a live event, with its outcome
        sent = fake.call(lambda f: f.inject_message("hello from Lark", apps=["cli_good"]))
        event = page.locator("#lark-events tbody tr").first
        expect(event).to_contain_text("im.message.receive_v1")
        expect(event).to_contain_text(sent["chat_id"])
        [stored] = http.get("/api/lark/events", params={"limit": 1}).json()["events"]
        expect(event).to_have_attribute("data-outcome", stored["outcome"])
        expect(page.locator('[data-testid="events-cli_good"]')).to_have_text("1")
        event.locator("summary").click()
        expect(event.locator("pre.payload")).to_contain_text(sent["message_id"])
        assert SECRET not in page.content()
        assert "wrong-secret-value" not in page.content()
        shot(page, "lark")

        if stored["outcome"] == "unauthorized":  # with the bridge: the sender can be let in
            expect(event).to_contain_text(stored["detail"])
            page.locator(f'[data-testid="authorize-{stored["id"]}"]').click()
            expect(page.locator('[data-testid="lark-user-id"]')).to_have_value(stored["sender_id"])
            expect(page.locator('[data-testid="lark-user-name"]')).to_be_focused()
            page.keyboard.type("Alice")
            page.keyboard.press("Enter")
            expect(
                page.locator(f'#lark-users tr[data-user="{stored["sender_id"]}"]')
            ).to_be_visible()
            assert http.delete(f"/api/lark-users/{stored['sender_id']}").is_success


def test_an_invalid_lark_json_shows_its_error_and_the_page_keeps_working(
    page: Page, server: ServerProcess, http: httpx.Client, lark_file: Path, shot: Shot
) -> None:
    write_bots(lark_file, {"app_id": "cli_away", "app_secret": SECRET, "domain": NOWHERE})
    assert http.post("/api/lark/reload").status_code == 200
    page.goto(f"{server.url}/#/settings?tab=lark")
    away = page.locator('#lark-bots tr[data-bot="cli_away"]')
    expect(away).to_be_visible()
    expect(page.locator('[data-testid="state-cli_away"]')).to_have_text(
        re.compile("^(connecting|reconnecting)$")
    )

    lark_file.write_text('{"bots": [{"app_id": "cli_away", "app_secret": ')
    page.locator('[data-testid="reload-lark"]').click()
    expect(page.locator("#toast")).to_contain_text("is not valid JSON")
    refused = page.locator('[data-testid="lark-config-error"]')
    expect(refused).to_contain_text("lark.json was refused")
    expect(refused).to_contain_text(f"{lark_file} is not valid JSON (")
    expect(refused).to_contain_text("the ones still running")
    expect(away).to_be_visible()  # the running bot is kept
    expect(page.locator('[data-testid="tab-lark"]')).to_contain_text("file refused")
    shot(page, "refused")

    # the page keeps working: the other tab, then a fixed file
    page.locator('[data-testid="tab-access"]').click()
    expect(page.locator('[data-testid="lark-user-id"]')).to_be_visible()
    expect(page.locator('[data-testid="tab-lark"]')).to_contain_text("file refused")
    page.go_back()
    expect(refused).to_be_visible()
    write_bots(lark_file)
    page.locator('[data-testid="reload-lark"]').click()
    expect(refused).to_be_hidden()
    expect(away).to_have_count(0)
    expect(page.locator("#panel-lark .placeholder").first).to_contain_text("No Lark bots in")
    expect(page.locator('[data-testid="tab-lark"] .tab-note')).to_be_hidden()


def test_settings_at_phone_width_by_keyboard(
    pages: Pages, server: ServerProcess, shot: Shot
) -> None:
    page = pages.new(viewport=PHONE)
    page.goto(f"{server.url}/#/settings")
    access = page.locator('[data-testid="tab-access"]')
    expect(access).to_be_visible()
    access.focus()
    page.keyboard.press("ArrowRight")
    lark = page.locator('[data-testid="tab-lark"]')
    expect(lark).to_have_attribute("aria-selected", "true")
    expect(lark).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/settings\?tab=lark$"))
    expect(page.locator('[data-testid="reload-lark"]')).to_be_visible()
    shot(page, "lark")
    page.keyboard.press("Home")
    expect(access).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-lark")).to_be_hidden()

    # add a user with the keyboard only
    user_id = page.locator('[data-testid="lark-user-id"]')
    user_id.focus()
    page.keyboard.type("on_phone")
    page.keyboard.press("Tab")
    page.keyboard.type("Pat")
    page.keyboard.press("Enter")
    expect(page.locator('#lark-users tr[data-user="on_phone"]')).to_contain_text("Pat")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width}px)"
    shot(page, "access")
    delete = page.locator('[data-testid="delete-user-on_phone"]')
    delete.focus()
    page.keyboard.press("Enter")
    expect(page.locator('#lark-users tr[data-user="on_phone"]')).to_have_count(0)
