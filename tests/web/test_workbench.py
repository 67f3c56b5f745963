"""The workbench in a real browser, against a real server and daemon (tests/web/conftest.py).

Each test works in rooms of its own on the module's server; the restart test starts a server
of its own. Waits are Playwright's auto-waiting ``expect`` assertions, or ``wait_until`` on the
API, always with a timeout; nothing sleeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import APIResponse, Locator, Page, Route, expect

from tests.conftest import wait_until
from tests.e2e.conftest import start_server, stop_process
from tests.e2e.daemon_process import start_daemon
from tests.web.conftest import PHONE, Pages, Stack

pytestmark = pytest.mark.e2e

Shot = Callable[..., Path]
KILL_TIMEOUT_MS = 20_000  # the kill grace (1 s) plus the daemon's report, with room to spare


# Records what the page's EventSource receives (hello and resync frames), for the test to read.
RECORD_STREAM = """
window.__stream = [];
window.EventSource = class extends window.EventSource {
  constructor(url, init) {
    super(url, init);
    for (const kind of ["hello", "resync"]) {
      this.addEventListener(kind, (e) => window.__stream.push([kind, e.data]));
    }
  }
};
"""


def open_room(page: Page, stack: Stack, room: str) -> Locator:
    """Open ``#/rooms/<room>``; returns the composer once it is there."""
    page.goto(f"{stack.url}/#/rooms/{room}")
    composer = page.locator("textarea#composer")
    expect(composer).to_be_visible()
    return composer


def message(page: Page, message_id: int) -> Locator:
    return page.locator(f'#messages .message[data-id="{message_id}"]')


def badge(page: Page, room: str) -> Locator:
    return page.locator(f'#rooms a[data-room="{room}"] .unread')


def expect_no_unread(page: Page, room: str) -> None:
    """The room's badge is hidden, empty or 0 (the contract allows any of these)."""
    page.wait_for_function(
        """room => {
            const el = document.querySelector(`#rooms a[data-room="${room}"] .unread`);
            return !el || !el.offsetParent || /^\\s*0?\\s*$/.test(el.textContent);
        }""",
        arg=room,
        timeout=10_000,
    )


def scroll_messages_to_top(page: Page) -> None:
    """Scroll the message list (or whichever ancestor scrolls it) to its top."""
    page.locator("#messages").evaluate(
        """el => {
            for (let node = el; node; node = node.parentElement) {
                if (node.scrollHeight > node.clientHeight + 1) {
                    const overflow = getComputedStyle(node).overflowY;
                    const scrolls = overflow === "auto" || overflow === "scroll";
                    if (scrolls || node === document.scrollingElement) {
                        node.scrollTop = 0;  // fires "scroll", as a wheel would
                        return;
                    }
                }
            }
            document.scrollingElement.scrollTop = 0;
        }"""
    )


def with_status(page: Page, row: str, status: str) -> Locator:
    """The element of table row ``row`` (a selector) that carries class ``status-<status>``:
    the row itself or a cell or badge in it."""
    return page.locator(f"{row}.status-{status}, {row} .status-{status}")


def gone(pid: int) -> bool:
    """No such process any more (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- rooms -----------------------------------------------------------------------------------


def test_send_a_message_from_the_composer(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    composer = open_room(page, stack, room)
    expect(page.locator('[data-testid="sender"]')).to_have_value("operator")

    composer.fill("hello from the workbench")
    composer.press("Enter")
    sent = page.locator("#messages .message", has_text="hello from the workbench")
    expect(sent).to_have_count(1)
    expect(sent.locator(".sender")).to_have_text("operator")
    expect(composer).to_have_value("")
    [stored] = stack.messages(room)
    assert (stored["sender"], stored["content"]) == ("operator", "hello from the workbench")
    expect(sent).to_have_attribute("data-id", str(stored["id"]))

    # Shift+Enter is a new line; the send button sends too; the sender name is remembered
    page.locator('[data-testid="sender"]').fill("alice")
    composer.press_sequentially("line one")
    composer.press("Shift+Enter")
    composer.press_sequentially("line two")
    expect(composer).to_have_value("line one\nline two")
    page.locator('button[data-testid="send"]').click()
    expect(page.locator("#messages .message")).to_have_count(2)
    assert [(m["sender"], m["content"]) for m in stack.messages(room)][1] == (
        "alice",
        "line one\nline two",
    )

    # Message text is shown as text, never parsed as HTML
    stack.post(room, '<img src=x onerror="window.__xss = 1"> <b>bold</b>')
    expect(page.locator("#messages .message .text", has_text="<img src=x")).to_have_count(1)
    assert page.locator("#messages img, #messages b").count() == 0
    assert page.evaluate("window.__xss") is None
    shot(page)

    page.reload()
    expect(page.locator('[data-testid="sender"]')).to_have_value("alice")
    expect(page.locator("#messages .message")).to_have_count(3)


def test_an_agent_reply_arrives_live(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    composer = open_room(page, stack, room)
    composer.fill("@codex please say hello")
    composer.press("Enter")

    mine = page.locator("#messages .message", has_text="please say hello")
    expect(mine.locator(".mention", has_text="@codex")).to_have_count(1)
    run = stack.wait_run(room, "completed")
    reply = page.locator("#messages .message.agent", has_text=f"fake codex: done (run {run['id']})")
    expect(reply).to_have_count(1, timeout=30_000)
    expect(reply.locator(".sender")).to_contain_text("codex")
    [stored] = [m for m in stack.messages(room) if m["sender"] == "codex"]
    expect(reply).to_have_attribute("data-id", str(stored["id"]))
    assert stored["parent_id"] == run["message_id"]  # the reply is in the message's thread
    shot(page)


def test_mention_completion_in_the_composer(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    # The list comes from the room's mentionables: type once they are in, as a person would
    with page.expect_response(re.compile(rf"/api/rooms/{room}/mentionables")):
        composer = open_room(page, stack, room)
    composer.press_sequentially("@co")
    choice = page.locator('#mention-list li[data-key="codex"]')
    expect(choice).to_be_visible()
    shot(page)
    composer.press("Enter")
    expect(composer).to_have_value("@codex ")
    expect(page.locator("#mention-list")).to_be_hidden()

    # Escape closes the list without picking
    composer.press_sequentially("and @c")
    expect(choice).to_be_visible()
    composer.press("Escape")
    expect(page.locator("#mention-list")).to_be_hidden()
    expect(composer).to_have_value("@codex and @c")
    assert stack.messages(room) == []  # picking never sent anything


def test_an_at_typed_before_the_mentionables_load_gets_its_choices(
    page: Page, stack: Stack
) -> None:
    room = stack.room()
    held: list[Route] = []
    page.route(re.compile(rf"/api/rooms/{room}/mentionables"), lambda r: held.append(r))
    composer = open_room(page, stack, room)
    composer.press_sequentially("@co")
    wait_until(lambda: page.evaluate("1") and held, timeout=10)  # evaluate pumps events
    expect(page.locator("#mention-list")).to_be_hidden()  # nothing to offer yet
    held[0].continue_()
    expect(page.locator('#mention-list li[data-key="codex"]')).to_be_visible()
    composer.press("Tab")
    expect(composer).to_have_value("@codex ")


def test_change_a_members_mode(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    stack.api("POST", f"/api/rooms/{room}/agents", json={"agent": "codex", "mode": "mentions"})
    open_room(page, stack, room)
    expect(page.locator('#members [data-member="codex"]')).to_be_visible()
    select = page.locator('#members select[data-testid="mode-codex"]')
    expect(select).to_have_value("mentions")

    select.select_option("muted")

    def mode() -> str | None:
        members = stack.api("GET", f"/api/rooms/{room}/members")["members"]
        found = [m["mode"] for m in members if m["member"] == "codex"]
        return found[0] if found == ["muted"] else None

    wait_until(mode, timeout=10)
    shot(page)
    page.reload()
    expect(page.locator('#members select[data-testid="mode-codex"]')).to_have_value("muted")


def test_unread_badge_counts_messages_from_another_client(
    pages: Pages, stack: Stack, shot: Shot
) -> None:
    here, other = stack.room(), stack.room()
    page = pages.new()
    open_room(page, stack, here)
    expect(page.locator(f'#rooms a[data-room="{other}"]')).to_be_visible()
    expect_no_unread(page, other)

    # Posted by someone else into a room that is not open: counted live
    first = stack.post(other, "one")
    stack.post(other, "two")
    expect(badge(page, other)).to_have_text(re.compile(r"^\s*2\s*$"))
    expect_no_unread(page, here)
    shot(page)

    # Opening the room reads it; leaving it, a new message counts from there
    page.locator(f'#rooms a[data-room="{other}"]').click()
    expect(message(page, first["id"])).to_be_visible()
    expect_no_unread(page, other)
    page.locator(f'#rooms a[data-room="{here}"]').click()
    expect(page).to_have_url(re.compile(rf"#/rooms/{here}$"))
    stack.post(other, "three")
    expect(badge(page, other)).to_have_text(re.compile(r"^\s*1\s*$"))

    # With the page closed, the count comes from the server when it opens again
    context = page.context
    page.close()
    stack.post(other, "four")
    again = pages.in_context(context)
    open_room(again, stack, here)
    expect(badge(again, other)).to_have_text(re.compile(r"^\s*2\s*$"))


def test_a_long_room_opens_at_its_end_and_pages_back(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room("long")
    ids = [stack.post(room, f"message number {i}")["id"] for i in range(300)]
    open_room(page, stack, room)
    shown = page.locator("#messages .message")
    expect(message(page, ids[-1])).to_be_in_viewport()  # opens at the newest
    assert 0 < shown.count() < 300  # a page, not the whole room
    assert message(page, ids[0]).count() == 0
    shot(page)

    # Scrolled to the top, older pages load and the view stays where it was
    for _ in range(10):
        if message(page, ids[0]).count():
            break
        before = shown.count()
        oldest = shown.first.get_attribute("data-id")
        scroll_messages_to_top(page)
        expect(shown).not_to_have_count(before)
        expect(page.locator(f'#messages .message[data-id="{oldest}"]')).to_be_in_viewport()
    expect(message(page, ids[0])).to_be_attached()
    shown_ids = [int(i) for i in shown.evaluate_all("els => els.map(e => e.dataset.id)")]
    assert shown_ids == ids  # every message once, in order


def test_a_room_at_phone_width(pages: Pages, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    for i in range(8):
        stack.post(room, f"a message to read on a phone, number {i}")
    page = pages.new(viewport=PHONE, is_mobile=True, has_touch=True)
    composer = open_room(page, stack, room)
    expect(page.locator("#messages .message")).to_have_count(8)
    expect(composer).to_be_in_viewport()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide at phone width"
    shot(page)


# -- runs ------------------------------------------------------------------------------------


def test_kill_a_run_from_its_page(page: Page, stack: Stack, shot: Shot) -> None:
    room = stack.room()
    stack.post(room, "[fake:sleep=120] work until killed", mentions=["codex"])
    run = stack.wait_run(room, "running")
    run_id, pid = run["id"], run["pid"]

    page.goto(f"{stack.url}/#/runs")
    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row).to_be_visible()
    expect(with_status(page, f'#runs tr[data-run="{run_id}"]', "running")).not_to_have_count(0)
    expect(row).to_contain_text("codex")
    expect(row).to_contain_text(room)
    shot(page, "runs")

    page.goto(f"{stack.url}/#/runs/{run_id}")
    status = page.locator('[data-testid="run-status"]')
    expect(status).to_have_text(re.compile(r"running", re.I))
    expect(page.locator("pre#run-output")).to_contain_text("thread.started")
    kill = page.locator('[data-testid="kill"]')
    expect(kill).to_be_enabled()
    expect(page.locator('[data-testid="restart"]')).to_be_enabled()
    shot(page, "running")

    kill.click()
    expect(status).to_have_text(re.compile(r"killed", re.I), timeout=KILL_TIMEOUT_MS)
    expect(kill).to_be_disabled()
    expect(page.locator('[data-testid="restart"]')).to_be_disabled()
    wait_until(lambda: gone(pid), timeout=10)
    assert stack.api("GET", f"/api/runs/{run_id}")["run"]["status"] == "killed"
    shot(page, "killed")


# -- agents and computers --------------------------------------------------------------------


def test_agents_page_lists_and_creates_agents(page: Page, stack: Stack, shot: Shot) -> None:
    page.goto(f"{stack.url}/#/agents")
    expect(page.locator('#agents tr[data-agent="codex"]')).to_be_visible()
    page.locator('[data-testid="agent-key"]').fill("helper-web")
    page.locator('[data-testid="create-agent"]').click()
    expect(page.locator('#agents tr[data-agent="helper-web"]')).to_be_visible()
    assert stack.api("GET", "/api/agents/helper-web")["agent"]["key"] == "helper-web"
    shot(page)


def test_a_load_in_flight_does_not_drop_an_agent_just_created(page: Page, stack: Stack) -> None:
    """A live event reloads the list; an answer read before the create must not undo it."""
    page.goto(f"{stack.url}/#/agents")
    expect(page.locator('#agents tr[data-agent="codex"]')).to_be_visible()
    held: list[tuple[Route, APIResponse]] = []

    def hold(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        held.append((route, route.fetch()))  # read now, answer later: a stale list

    page.route("**/api/agents", hold)
    stack.api("POST", "/api/agents/onboard", json={"key": "spare", "runtime": "codex"})
    stack.api("POST", "/api/agents/spare/assignment", json={"computer_id": stack.computer_id})
    # Route handlers run while Playwright is called: give it turns until the reload is held.
    wait_until(lambda: page.wait_for_timeout(20) or bool(held), timeout=10)

    page.locator('[data-testid="agent-key"]').fill("made-here")
    page.locator('[data-testid="create-agent"]').click()
    expect(page.locator('#agents tr[data-agent="made-here"]')).to_be_visible()
    for route, response in held:
        route.fulfill(response=response)
    page.unroute("**/api/agents")
    expect(page.locator('#agents tr[data-agent="spare"]')).to_be_visible()
    expect(page.locator('#agents tr[data-agent="made-here"]')).to_be_visible()


def test_provision_a_computer(pages: Pages, stack: Stack, shot: Shot, tmp_path: Path) -> None:
    page = pages.new(permissions=["clipboard-read", "clipboard-write"])
    page.goto(f"{stack.url}/#/computers")
    mine = page.locator(f'#computers tr[data-computer="{stack.computer_id}"]')
    expect(mine).to_be_visible()
    online = with_status(page, f'#computers tr[data-computer="{stack.computer_id}"]', "online")
    expect(online).not_to_have_count(0)

    page.locator('[data-testid="provision-name"]').fill("laptop-web")
    page.locator('[data-testid="provision"]').click()
    key_box = page.locator('[data-testid="api-key"]')
    expect(key_box).to_be_visible()
    key = key_box.inner_text().strip()
    assert key and " " not in key
    command = page.locator('[data-testid="daemon-command"]')
    expect(command).to_contain_text("pal daemon")
    expect(command).to_contain_text(key)
    expect(command).to_contain_text(stack.url)
    shot(page, "key")

    page.locator('[data-testid="copy-key"]').click()
    assert page.evaluate("navigator.clipboard.readText()") == key

    [made] = [
        c for c in stack.api("GET", "/api/computers")["computers"] if c["name"] == "laptop-web"
    ]
    expect(page.locator(f'#computers tr[data-computer="{made["id"]}"]')).to_be_visible()

    # The key works: a daemon connects with it; after a reload the key is gone from the page
    daemon = start_daemon(stack.server, "--dry-run", api_key=key, home=tmp_path / "laptop")
    try:
        page.reload()
        row = page.locator(f'#computers tr[data-computer="{made["id"]}"]')
        expect(row).to_be_visible()
        online = with_status(page, f'#computers tr[data-computer="{made["id"]}"]', "online")
        expect(online).not_to_have_count(0)
        expect(page.locator('[data-testid="api-key"]')).to_have_count(0)
        assert key not in page.content()
        shot(page)
    finally:
        daemon.terminate()


# -- live updates ----------------------------------------------------------------------------


def test_live_updates_resume_after_the_server_restarts(
    page: Page, tmp_path: Path, shot: Shot
) -> None:
    server = start_server(tmp_path / "home")
    try:

        def post(text: str) -> int:
            body = {"room": "general", "sender": "alice", "content": text}
            r = httpx.post(f"{server.url}/api/messages", json=body, timeout=10)
            assert r.status_code == 201, r.text
            return int(r.json()["message"]["id"])

        page.add_init_script(RECORD_STREAM)
        page.goto(f"{server.url}/#/rooms/general")
        expect(page.locator("textarea#composer")).to_be_visible()
        page.evaluate("window.__sameDocument = true")
        before = post("before the restart")
        expect(page.locator(f'#messages .message[data-id="{before}"]')).to_be_visible()

        code = stop_process(server.proc, timeout=10)
        assert code != -9, "the server did not stop within 10 s of SIGTERM with a page open"
        server.restart()
        meanwhile = post("while the page was reconnecting")  # another boot: resync
        expect(page.locator(f'#messages .message[data-id="{meanwhile}"]')).to_be_visible(
            timeout=20_000
        )
        after = post("after the reconnect")  # live again
        expect(page.locator(f'#messages .message[data-id="{after}"]')).to_be_visible()
        expect(page.locator("#messages .message")).to_have_count(3)  # no duplicates
        assert page.evaluate("window.__sameDocument") is True  # no reload
        # The browser reconnected on its own, to another boot, which told it to resync
        page.wait_for_function("window.__stream.some(([kind]) => kind === 'resync')")
        hellos = [data for kind, data in page.evaluate("window.__stream") if kind == "hello"]
        boots = {json.loads(data)["boot"] for data in hellos}
        assert len(hellos) >= 2 and len(boots) == 2, hellos
        shot(page)
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text(errors="replace")
