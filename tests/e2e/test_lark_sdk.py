"""The fake Lark Open Platform against the real SDK's long-connection client (a child
process: the SDK's ws client owns a module-level event loop and never returns), and the fake
itself run as a child process with its HTTP test controls."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from pal.lark.connection import LarkConnection
from tests.conftest import wait_until
from tests.e2e.conftest import free_port, stop_process
from tests.fakes.lark_platform import ThreadedFake, eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sdk-secret"


class SdkClient:
    """``python -m tests.fakes.lark_sdk_client``: its ``EVENT`` lines, read in a thread."""

    def __init__(self, origin: str, app_id: str) -> None:
        argv = [sys.executable, "-m", "tests.fakes.lark_sdk_client", "--domain", origin]
        argv += ["--app-id", app_id, "--app-secret", SECRET]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.events: list[dict[str, Any]] = []
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("EVENT "):
                self.events.append(json.loads(line[len("EVENT ") :]))

    def stop(self) -> None:
        stop_process(self.proc)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def threaded():
    with ThreadedFake(ping_interval=1) as threaded:
        threaded.call(lambda fake: fake.add_app("cli_sdk", SECRET))
        yield threaded


def test_sdk_long_connection_receives_events_and_acks_each_once(threaded):
    sdk = SdkClient(threaded.origin, "cli_sdk")
    try:
        fake = threaded.fake
        wait_until(lambda: fake.live_connections("cli_sdk"), timeout=30)
        wait_until(lambda: fake.live_connections("cli_sdk")[0].pings >= 1)
        one = threaded.call(lambda f: f.inject_message("hello SDK", apps=["cli_sdk"]))
        text = "split " * 3000
        split = threaded.call(lambda f: f.inject_message(text, apps=["cli_sdk"], parts=3))
        wait_until(lambda: len(sdk.events) == 2, timeout=15)
        acks = list(fake.acks)
    finally:
        sdk.stop()
    assert [e["message_id"] for e in sdk.events] == [one["message_id"], split["message_id"]]
    assert sdk.events[0]["event_id"] == one["events"]["cli_sdk"]["header"]["event_id"]
    assert json.loads(sdk.events[1]["content"]) == {"text": text}
    # Exactly one ack per message, {"code": 200}, the split one for its last fragment.
    assert [a.message_id for a in acks] == [one["pushed"]["cli_sdk"], split["pushed"]["cli_sdk"]]
    assert [a.payload for a in acks] == [{"code": 200}, {"code": 200}]
    assert (acks[1].headers["sum"], acks[1].headers["seq"]) == ("3", "2")
    assert "biz_rt" in acks[0].headers


def test_sdk_long_connection_with_a_wrong_secret_stops(threaded):
    argv = [sys.executable, "-m", "tests.fakes.lark_sdk_client", "--domain", threaded.origin]
    argv += ["--app-id", "cli_sdk", "--app-secret", "wrong"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    # The fake's refusal is fatal for the SDK too (a ClientException, no reconnect).
    assert done.returncode != 0
    assert "ClientException" in done.stderr and "10014" in done.stderr + done.stdout


@pytest.fixture
def fake_process(tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "tests.fakes.lark_platform", "--port", str(port)]
    argv += ["--state-dir", str(tmp_path), "--app", f"cli_a:{SECRET}", "--ping-interval", "1"]
    log = (tmp_path / "fake.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        origin = wait_until(
            lambda: (tmp_path / "origin").exists() and (tmp_path / "origin").read_text(),
            timeout=30,
        )
        assert origin == f"http://127.0.0.1:{port}"
        yield origin
    finally:
        stop_process(proc)
        log.close()


async def test_fake_as_a_process_is_driven_by_its_control_api(fake_process):
    origin = fake_process
    events: list[dict[str, Any]] = []

    async def on_event(event: dict[str, Any]) -> None:
        events.append(event)

    bot = SimpleNamespace(app_id="cli_a", app_secret=SECRET, domain=origin)
    connection = LarkConnection(bot, on_event, jitter=lambda: 0.0, backoff_base=0.05)
    connection.start()
    async with httpx.AsyncClient(base_url=origin) as http:
        try:

            async def state() -> dict[str, Any]:
                return dict((await http.get("/_fake/state")).json())

            await eventually(lambda: connection.status()["state"] == "connected", 30)
            r = await http.post("/_fake/inject", json={"text": "via control", "apps": ["cli_a"]})
            injected = r.json()
            await eventually(lambda: events)
            assert events[0]["event"]["message"]["message_id"] == injected["message_id"]
            acks = (await state())["acks"]
            assert [(a["message_id"], a["payload"]) for a in acks] == [
                (injected["pushed"]["cli_a"], {"code": 200})
            ]
            assert (await http.post("/_fake/drop", json={"app_id": "cli_a"})).json() == {
                "connections": 1
            }
            await eventually(lambda: connection.status()["reconnects"] == 1, 10)
            assert (await state())["discoveries"] == ["cli_a", "cli_a"]
            await http.post("/_fake/silent", json={})
            await eventually(lambda: connection.status()["reconnects"] == 2, 10)
            assert [c["silent"] for c in (await state())["connections"]][:2] == [False, True]
        finally:
            await connection.stop()
