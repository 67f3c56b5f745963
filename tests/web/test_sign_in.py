"""The workbench of a server that asks for the admin token (PAL_AUTH=token, as for one that
other hosts can reach): the sign-in form, a session that sends and gets live events, and
signing out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ServerProcess, start_server

Shot = Callable[..., Path]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "home", {"PAL_AUTH": "token"})
    yield server
    server.stop()


def test_sign_in_send_see_live_messages_and_sign_out(
    page: Page, guarded: ServerProcess, shot: Shot
) -> None:
    token = (guarded.home / "admin.token").read_text().strip()
    admin = httpx.Client(
        base_url=guarded.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )

    page.goto(f"{guarded.url}/#/rooms/general")
    form = page.locator("#login")
    expect(form).to_be_visible()
    expect(form).to_contain_text("PAL_AUTH=token")
    shot(page, "form")

    page.locator("#token").fill("pal_admin_not-the-token-at-all")
    page.locator("#login button").click()
    expect(page.locator("#login-error")).to_contain_text("not the admin token")

    page.locator("#token").fill(token)
    page.locator("#token").press("Enter")
    composer = page.locator("textarea#composer")
    expect(composer).to_be_visible()
    expect(page.locator("form.signout button")).to_be_visible()

    composer.fill("signed in and sending")
    composer.press("Enter")
    expect(page.locator("#messages .message", has_text="signed in and sending")).to_have_count(1)
    stored = admin.get("/api/messages", params={"room": "general"}).json()["messages"]
    assert stored[-1]["content"] == "signed in and sending"

    # live events reach a signed-in page
    admin.post(
        "/api/messages", json={"room": "general", "sender": "bob", "content": "live for you"}
    )
    expect(page.locator("#messages .message", has_text="live for you")).to_have_count(1)
    shot(page, "signed-in")

    page.locator("form.signout button").click()
    expect(page.locator("#login")).to_be_visible()
    assert page.context.cookies() == []
    admin.close()
