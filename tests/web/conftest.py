"""The browser and the processes behind the workbench tests.

Playwright's sync API drives Debian's chromium (``/usr/bin/chromium``, headless): one browser
per test session, a fresh context (own cookies and localStorage) per test. When chromium is
missing the tests FAIL and say how to install it; they never skip, so CI cannot pass without
having run them.

The ``stack`` fixture is one real ``pal server`` and one real ``pal daemon`` (no
``--dry-run``) per module, with the fake ``codex`` of tests/fakes first on the daemon's PATH
and an agent ``codex`` assigned to it, as tests/e2e/test_runs.py sets them up. Tests share it
by working in rooms of their own.

Screenshots go to ``test-output/web/<test name>[-<page>].png`` under the repository root
(git-ignored), so a person can look at the pages; a failing test also leaves
``<test name>-failed.png``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, start_server
from tests.e2e.daemon_process import DaemonProcess, provision, start_daemon
from tests.fakes import install_fakes

CHROMIUM = Path(os.environ.get("PAL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "web"
KILL_GRACE = 1.0

# Every auto-waiting assertion waits this long unless it says otherwise.
expect.set_options(timeout=10_000)


# -- the browser -----------------------------------------------------------------------------


# Module scope, not session: the sync API runs an event loop in this thread while it is
# open, and an async test that runs later in the same worker could not start its own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless chromium for the whole session (per xdist worker)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the workbench tests need Debian's chromium "
            "(`apt-get install chromium`; .ci/run installs it)",
            pytrace=False,
        )
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass
class Pages:
    """Opens pages, each in a fresh browser context; closes them all after the test."""

    browser: Browser
    test_name: str
    opened: list[Page] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def new(self, viewport: dict[str, int] | None = None, **options: Any) -> Page:
        context = self.browser.new_context(viewport=viewport or DESKTOP, **options)
        return self.in_context(context)

    def in_context(self, context: Any) -> Page:
        """Another page in ``context`` (the same localStorage as the pages before)."""
        page: Page = context.new_page()
        # Uncaught exceptions and unhandled rejections in the page fail the test.
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.on("dialog", lambda dialog: dialog.accept())  # confirm("Kill run 3?") → yes
        self.opened.append(page)
        return page

    def shot(self, page: Page, name: str = "") -> Path:
        """Save a screenshot of ``page`` as test-output/web/<test name>[-name].png."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{self.test_name}{'-' + name if name else ''}.png"
        page.screenshot(path=str(path), full_page=False)
        return path

    def close(self) -> None:
        for context in {id(p.context): p.context for p in self.opened}.values():
            context.close()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Pages]:
    opened = Pages(browser, request.node.name)
    yield opened
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for i, page in enumerate(p for p in opened.opened if not p.is_closed()):
            opened.shot(page, "failed" if i == 0 else f"failed-{i}")
    opened.close()
    if call is not None and call.passed:
        assert not opened.errors, "errors in the page:\n" + "\n".join(opened.errors)


@pytest.fixture
def page(pages: Pages) -> Page:
    """A page at desktop width in a fresh context."""
    return pages.new()


@pytest.fixture
def shot(pages: Pages) -> Callable[..., Path]:
    """``shot(page, "runs")`` saves test-output/web/<test name>-runs.png."""
    return pages.shot


# -- the processes ---------------------------------------------------------------------------


@dataclass
class Stack:
    """A real server and daemon, the fake codex, and an HTTP client for the API."""

    server: ServerProcess
    daemon: DaemonProcess
    computer_id: str
    http: httpx.Client
    root: Path
    _rooms: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def room(self, prefix: str = "web") -> str:
        """A new room of this test's own."""
        name = f"{prefix}-{next(self._rooms)}"
        self.api("POST", "/api/rooms", json={"name": name})
        return name

    def post(self, room: str, text: str, sender: str = "alice", **fields: Any) -> dict[str, Any]:
        body = {"room": room, "sender": sender, "content": text, **fields}
        message: dict[str, Any] = self.api("POST", "/api/messages", json=body)["message"]
        return message

    def messages(self, room: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/api/messages", params={"room": room, "limit": 1000}
        )["messages"]
        return found

    def wait_run(self, room: str, status: str, timeout: float = 30) -> dict[str, Any]:
        """The first run in ``room`` with ``status`` (and, when running, its pid)."""

        def found() -> dict[str, Any] | None:
            runs = self.api("GET", "/api/runs", params={"room": room, "limit": 100})["runs"]
            for run in sorted(runs, key=lambda r: r["id"]):
                if run["status"] == status and (status != "running" or run["pid"]):
                    return dict(run)
            return None

        try:
            run: dict[str, Any] = wait_until(found, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"no {status} run in {room}\n--- daemon log:\n{self.daemon.output()}"
            ) from None
        return run


def daemon_env(root: Path) -> dict[str, str]:
    """The daemon's environment: the fakes first on PATH (then the venv's ``pal``, which the
    fake codex calls to reply), their homes and record folder, a short kill grace."""
    bin_dir = install_fakes(root / "bin")
    folders = {name: root / name for name in ("codex-home", "claude-home", "records")}
    for folder in folders.values():
        folder.mkdir()
    path = [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
    return {
        "PATH": os.pathsep.join(path),
        "CODEX_HOME": str(folders["codex-home"]),
        "CLAUDE_CONFIG_DIR": str(folders["claude-home"]),
        "FAKE_RECORD_DIR": str(folders["records"]),
        "PAL_KILL_GRACE": str(KILL_GRACE),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("web")
    server = start_server(root / "home")
    daemon: DaemonProcess | None = None
    http = httpx.Client(base_url=server.url, timeout=10)
    try:
        computer_id, api_key = provision(server, "web-tests")
        daemon = start_daemon(
            server, "--interval", "300", api_key=api_key, extra_env=daemon_env(root)
        )
        stack = Stack(server, daemon, computer_id, http, root)
        body = {"agent_key": "codex", "display_name": "Codex", "runtime": "codex"}
        stack.api("POST", "/api/agents/onboard", json={**body, "computer_id": computer_id})
        yield stack
    finally:
        http.close()
        if daemon is not None:
            daemon.terminate()
        server.stop()
