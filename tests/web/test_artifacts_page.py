"""The artifacts page in a real browser (tests/web/conftest.py): it lists artifacts live,
opens one in a sandbox, and revokes one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Stack

pytestmark = pytest.mark.e2e

Shot = Callable[..., Path]
HTML = (
    b"<!doctype html><title>before</title><h1>Coverage</h1>"
    b"<script>document.title = 'script ran in ' + window.origin</script>"
)


def upload(stack: Stack, title: str, **params: Any) -> dict[str, Any]:
    r = stack.http.post(
        "/api/artifacts",
        params={"title": title, **params},
        content=HTML,
        headers={"content-type": "text/html"},
    )
    assert r.status_code == 201, r.text
    artifact: dict[str, Any] = r.json()["artifact"]
    return artifact


def test_list_open_and_revoke_an_artifact(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room("artifacts")
    first = upload(stack, "Coverage report", created_by="codex", room=room)

    page.goto(f"{stack.url}/#/artifacts")
    row = page.locator(f'#artifacts tr[data-artifact="{first["id"]}"]')
    expect(row).to_be_visible()
    for text in ("Coverage report", "text/html", "codex", room, "active"):
        expect(row).to_contain_text(text)
    link = page.locator(f'[data-testid="open-{first["id"]}"]')
    expect(link).to_have_attribute("href", first["url"])
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    # a new upload shows up live, at the top
    second = upload(stack, "Benchmark")
    rows = page.locator("#artifacts tbody tr")
    expect(rows.first).to_have_attribute("data-artifact", second["id"])
    shot(page)

    # the content runs in an opaque origin and cannot call the API
    viewer = page.context.new_page()
    viewer.goto(first["url"])
    expect(viewer).to_have_title("script ran in null")
    blocked = viewer.evaluate("() => fetch('/api/rooms').then(() => 'reached', () => 'blocked')")
    assert blocked == "blocked"
    viewer.close()

    page.locator(f'[data-testid="revoke-{first["id"]}"]').click()  # the confirm is accepted
    expect(page.locator(f'[data-testid="status-{first["id"]}"]')).to_have_text("revoked")
    expect(page.locator(f'[data-testid="revoke-{first["id"]}"]')).to_have_count(0)
    expect(page.locator(f'[data-testid="open-{first["id"]}"]')).to_have_count(0)
    assert stack.http.get(first["url"]).status_code == 410
    shot(page, "revoked")
