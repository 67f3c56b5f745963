"""The Lark bridge end to end: the fake Lark Open Platform as a process on loopback, a real
``pal server`` holding the bots' long connections, a real ``pal daemon`` running the fake
``codex`` (which answers through ``pal cli send``). A Lark user writes, the agent runs, the
answer comes back to Lark as a reply; the "Typing" reaction is on while it runs.

One stack (one bot) serves the module's first tests, each with its own Lark user (so its
own chat and room); the reload and recovery tests reuse it and leave it connected. Twenty
bots get a stack of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, start_server, stop_process
from tests.e2e.daemon_process import DaemonProcess, provision, start_daemon
from tests.fakes import install_fakes
from tests.fakes.lark_platform import FakeLarkPlatform

pytestmark = pytest.mark.e2e

SECRET = "e2e-lark-SECRET-never-shown"
USERS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")


class FakeLark:
    """The fake platform as a process (``python -m tests.fakes.lark_platform``)."""

    def __init__(self, root: Path, apps: list[str]) -> None:
        """Starts the process; :meth:`wait_ready` waits until it listens."""
        self.state_dir = root / "fake-lark"
        self.log = root / "fake-lark.log"
        argv = [sys.executable, "-m", "tests.fakes.lark_platform"]
        argv += ["--state-dir", str(self.state_dir)]
        for app_id in apps:
            argv += ["--app", f"{app_id}:{SECRET}"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.origin = ""
        self.http = httpx.Client(timeout=10)

    def wait_ready(self) -> None:
        origin = self.state_dir / "origin"
        wait_until(lambda: origin.exists() or self.proc.poll() is not None, timeout=30)
        assert self.proc.poll() is None, self.log.read_text()
        self.origin = origin.read_text()
        self.http.base_url = httpx.URL(self.origin)

    def control(self, name: str, body: dict[str, Any] | None = None) -> Any:
        if body is None and name == "state":
            response = self.http.get(f"/_fake/{name}")
        else:
            response = self.http.post(f"/_fake/{name}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.control("state")
        return state

    def replies_to(self, message_id: str) -> list[dict[str, Any]]:
        return [m for m in self.state()["messages"] if m.get("reply_to") == message_id]

    def stop(self) -> None:
        self.http.close()
        stop_process(self.proc)  # type: ignore[arg-type]


@dataclass
class Stack:
    fake: FakeLark
    server: ServerProcess
    daemon: DaemonProcess
    apps: list[str]

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.server.url + path, timeout=10, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()

    def bots(self) -> dict[str, dict[str, Any]]:
        return {b["app_id"]: b for b in self.api("GET", "/api/lark")["bots"]}

    def wait_connected(self, reconnects: int = 0) -> None:
        def connected() -> bool:
            bots = self.bots().values()
            return all(b["state"] == "connected" and b["reconnects"] >= reconnects for b in bots)

        wait_until(connected, timeout=20, interval=0.05)

    def events(self, message_id: str) -> list[dict[str, Any]]:
        found = self.api("GET", "/api/lark/events", params={"limit": 1000})["events"]
        return [e for e in found if e["message_id"] == message_id]

    def wait_reply(self, message_id: str, timeout: float = 20) -> dict[str, Any]:
        def replied() -> dict[str, Any] | None:
            replies = self.fake.replies_to(message_id)
            return replies[0] if replies else None

        try:
            reply: dict[str, Any] = wait_until(replied, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"no reply to {message_id}; events: {self.events(message_id)}\n"
                f"--- daemon:\n{self.daemon.output()[-3000:]}\n--- server:\n"
                f"{self.server.log.read_text()[-3000:]}"
            ) from None
        return reply

    def deliveries(self, agent: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "GET", "/api/deliveries", params={"agent": agent, "limit": 200}
        )["deliveries"]
        return found


def write_lark(home: Path, fake: FakeLark, apps: list[str], agents: list[str]) -> None:
    open_ids = {a["app_id"]: a["open_id"] for a in fake.state()["apps"]}
    bots = [
        {
            "app_id": app_id,
            "app_secret": SECRET,
            "agent": agent,
            "label": f"Bot {agent}",
            "open_id": open_ids[app_id],
            "domain": fake.origin,
        }
        for app_id, agent in zip(apps, agents, strict=True)
    ]
    (home / "lark.json").write_text(json.dumps({"bots": bots}))


def make_stack(root: Path, count: int, *, dry_run: bool = False) -> Iterator[Stack]:
    """A fake platform with ``count`` apps, a server whose bots are those apps (bound to
    ``codex``, or ``codex0``... for several), and a daemon running the fake codex (or
    ``--dry-run``: runs that end at once and answer nothing). The slow starts overlap: the
    platform boots while the server does, the bots connect while the daemon starts."""
    apps = [f"cli_bot{i}" for i in range(count)]
    agents = ["codex"] if count == 1 else [f"codex{i}" for i in range(count)]
    fake = FakeLark(root, apps)
    home = root / "home"
    server = None
    daemon = None
    try:
        server = start_server(home)
        fake.wait_ready()
        write_lark(home, fake, apps, agents)
        reloaded = httpx.post(f"{server.url}/api/lark/reload", timeout=10)
        assert reloaded.status_code == 200, reloaded.text
        computer_id, api_key = provision(server)
        for agent in agents:
            body = {"agent_key": agent, "display_name": agent, "runtime": "codex"}
            response = httpx.post(
                f"{server.url}/api/agents/onboard", json={**body, "computer_id": computer_id}
            )
            assert response.status_code < 300, response.text
        users = FakeLarkPlatform()
        for name in USERS:
            body = {"user_id": users.user(name).union_id, "name": name}
            assert httpx.post(f"{server.url}/api/lark-users", json=body).status_code < 300
        bin_dir = install_fakes(root / "bin")
        (root / "codex-home").mkdir()
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "CODEX_HOME": str(root / "codex-home"),
        }
        args = ["--interval", "300", *(["--dry-run"] if dry_run else [])]
        daemon = start_daemon(server, *args, api_key=api_key, extra_env=env)
        stack = Stack(fake, server, daemon, apps)
        stack.wait_connected()
        yield stack
        assert SECRET not in server.log.read_text()
    finally:
        if daemon is not None:
            daemon.terminate()
        if server is not None:
            server.stop()
        fake.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from make_stack(tmp_path_factory.mktemp("lark"), 1)


def test_lark_p2p_message_gets_the_agents_reply_and_the_reaction_while_it_runs(stack):
    [app] = stack.apps
    sent = stack.fake.control("inject", {"text": "please check the build", "sender": "Alice"})
    message_id = sent["message_id"]

    reply = stack.wait_reply(message_id)
    assert reply["app_id"] == app and reply["chat_id"] == sent["chat_id"]
    assert json.loads(reply["body"]["content"])["text"].startswith("fake codex: done (run ")

    def reactions() -> list[tuple[str, ...]]:
        return [tuple(r) for r in stack.fake.state()["reaction_log"] if r[1] == message_id]

    log = wait_until(lambda: len(reactions()) == 2 and reactions(), timeout=10)
    assert log == [("add", message_id, "Typing", app), ("delete", message_id, "Typing", app)]
    [event] = stack.events(message_id)
    assert event["outcome"] == "delivered"
    [delivery] = [d for d in stack.deliveries("codex") if d["reason"] == "lark_mention"][-1:]
    room = stack.api("GET", f"/api/rooms/{delivery['room_id']}")["room"]
    assert room["kind"] == "lark" and room["name"].startswith("lark-bot-codex-alice-")
    messages = stack.api("GET", "/api/messages", params={"room": room["id"]})["messages"]
    assert [(m["sender"], m["sender_kind"]) for m in messages] == [
        ("Alice", "lark"),
        ("codex", "agent"),
    ]
    assert len(stack.fake.replies_to(message_id)) == 1  # the reply was not echoed or doubled


def test_lark_group_message_needs_a_mention_of_the_bot(stack):
    [app] = stack.apps
    group = {"sender": "Bob", "chat_id": "oc_team", "chat_type": "group", "apps": [app]}
    before = len(stack.deliveries("codex"))
    quiet = stack.fake.control("inject", {"text": "lunch?", **group})["message_id"]
    asked = stack.fake.control("inject", {"text": "review it", "mentions": [app], **group})
    stack.wait_reply(asked["message_id"])

    [ignored] = stack.events(quiet)
    assert ignored["outcome"] == "ignored"
    assert ignored["detail"] == "a group message that does not @-mention this bot"
    assert len(stack.deliveries("codex")) == before + 1
    assert stack.fake.replies_to(quiet) == []


def test_lark_repushed_event_makes_one_delivery(stack):
    [app] = stack.apps
    sent = stack.fake.control("inject", {"text": "only once", "sender": "Carol"})
    stack.wait_reply(sent["message_id"])
    before = len(stack.deliveries("codex"))
    stack.fake.control("push", {"app_id": app, "event": sent["events"][app]})

    def outcomes() -> list[str]:
        return sorted(e["outcome"] for e in stack.events(sent["message_id"]))

    assert wait_until(lambda: len(outcomes()) == 2 and outcomes()) == ["delivered", "duplicate"]
    assert len(stack.deliveries("codex")) == before
    assert len(stack.fake.replies_to(sent["message_id"])) == 1


def test_lark_unauthorized_sender_gets_no_delivery_and_is_recorded(stack):
    before = len(stack.deliveries("codex"))
    sent = stack.fake.control("inject", {"text": "let me in", "sender": "Mallory"})
    [event] = wait_until(lambda: stack.events(sent["message_id"]))
    assert event["outcome"] == "unauthorized"
    assert "pal console lark-users add --user-id on_" in event["detail"]
    shown = stack.server.pal("console", "lark", "events", "--limit", "5", "--json")
    assert shown.returncode == 0, shown.stderr
    [listed] = [e for e in json.loads(shown.stdout)["events"] if e["id"] == event["id"]]
    assert listed["outcome"] == "unauthorized"
    assert len(stack.deliveries("codex")) == before
    assert stack.fake.replies_to(sent["message_id"]) == []


def test_lark_invalid_reload_keeps_the_listeners(stack):
    path = stack.server.home / "lark.json"
    good = path.read_text()
    [bot] = json.loads(good)["bots"]
    path.write_text(json.dumps({"bots": [bot, {**bot, "agent": None}]}))
    try:
        refused = httpx.post(f"{stack.server.url}/api/lark/reload", timeout=10)
        assert refused.status_code == 422
        assert f"app_id {bot['app_id']} is also bots[0]" in refused.json()["error"]
        sent = stack.fake.control("inject", {"text": "still there?", "sender": "Dave"})
        stack.wait_reply(sent["message_id"])
    finally:
        path.write_text(good)
    assert stack.api("POST", "/api/lark/reload")["error"] is None


@pytest.mark.parametrize("control", ["drop", "silent"])
def test_lark_dropped_or_silent_connection_recovers(stack, control):
    [app] = stack.apps
    reconnects = stack.bots()[app]["reconnects"]
    assert stack.fake.control(control, {"app_id": app})["connections"] == 1
    # Sent while the connection is gone (or half-open): the platform keeps it for the next.
    sent = stack.fake.control("inject", {"text": f"after {control}", "sender": "Erin"})
    stack.wait_reply(sent["message_id"])
    stack.wait_connected(reconnects=reconnects + 1)


@pytest.fixture
def twenty(tmp_path: Path) -> Iterator[Stack]:
    yield from make_stack(tmp_path, 20, dry_run=True)


def test_lark_twenty_bots_in_one_server_each_answer(twenty):
    # The daemon runs dry (each run ends at once) and each agent's answer is posted as the
    # agent over the API, as `pal cli send` would: twenty fake codex processes at once would
    # time the machine, not the bridge.
    stack = twenty
    assert len({c["app_id"] for c in stack.fake.state()["connections"] if c["live"]}) == 20
    sent = {
        app: stack.fake.control("inject", {"text": f"hi {app}", "apps": [app]})["message_id"]
        for app in stack.apps
    }
    for i in range(20):
        agent = f"codex{i}"
        [delivery] = wait_until(lambda a=agent: stack.deliveries(a))
        body = {
            "room": delivery["room_id"],
            "sender": agent,
            "content": f"answer from {agent}",
            "parent": delivery["message_id"],
        }
        stack.api("POST", "/api/messages", json=body)
    for i, (app, message_id) in enumerate(sent.items()):
        reply = stack.wait_reply(message_id)
        assert reply["app_id"] == app
        assert json.loads(reply["body"]["content"]) == {"text": f"answer from codex{i}"}

    def deleted() -> list[str]:
        return [r[1] for r in stack.fake.state()["reaction_log"] if r[0] == "delete"]

    # Each dry run ended at once: every reaction came off.
    assert sorted(wait_until(lambda: len(deleted()) == 20 and deleted())) == sorted(sent.values())
