"""Lark from the console against the fake Lark Open Platform on loopback and a real server:
the interactive Lark setup of ``agents onboard/update --interactive`` (a new app by QR scan,
or a pasted App ID and Secret; rebind, unbind), ``lark send`` and ``lark daemon``. The real
``pal console`` process is driven through its stdin. Secrets never appear in any output or in
the server's log."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from pal.lark import frames
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.test_console import console, error_line, ok
from tests.fakes.lark_platform import FakeRegistration, ThreadedFake

pytestmark = pytest.mark.e2e

SECRET = "setup-secret-VALUE-never-shown"
OTHER_SECRET = "other-secret-VALUE-never-shown"
# onboard --interactive asks: agent key, display name, runtime, description, computer id
ACCEPT_AGENT = ["", "", "", "", ""]


@pytest.fixture
def lark() -> Iterator[ThreadedFake]:
    frames.load()  # the SDK's import (seconds when the machine is busy), outside the fake's start
    with ThreadedFake(ping_interval=1, registration_interval=0.2) as threaded:
        yield threaded


def lark_file(server: ServerProcess) -> Path:
    return server.home / "lark.json"


class Console:
    """A running ``pal console ...`` whose answers were written to its stdin (then closed)."""

    def __init__(self, server: ServerProcess, args: tuple[str, ...], answers: list[str]) -> None:
        self.server = server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pal", "console", *args],
            env=server.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{answer}\n" for answer in answers))
        self.proc.stdin.close()
        self.proc.stdin = None  # for communicate(): the answers are all written

    def finish(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for text in (out, err, self.server.log.read_text()):
            assert SECRET not in text and OTHER_SECRET not in text
        assert "Traceback" not in err, err
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


def interactive(server: ServerProcess, *args: str, answers: list[str]) -> Console:
    return Console(server, args, answers)


def last_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The ``error: ...`` line that ends a failed interactive command's stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    return last.removeprefix("error: ")


def scanned(lark: ThreadedFake, proc: Console) -> FakeRegistration:
    """The registration the console began, once it is polling (the QR code is shown)."""

    def polling() -> FakeRegistration | None:
        assert proc.proc.poll() is None, proc.finish()
        regs = lark.call(lambda fake: list(fake.registrations))
        return regs[-1] if regs and regs[-1].polls > 0 else None

    registration: FakeRegistration = wait_until(polling, timeout=30)
    return registration


def lark_bots(server: ServerProcess) -> list[dict]:
    return list(httpx.get(f"{server.url}/api/lark").json()["bots"])


def bind_by_file(server: ServerProcess, *bots: dict) -> None:
    server.home.mkdir(parents=True, exist_ok=True)
    lark_file(server).write_text(json.dumps({"bots": list(bots)}))
    lark_file(server).chmod(0o600)
    assert httpx.post(f"{server.url}/api/lark/reload").status_code == 200


# -- QR scan -------------------------------------------------------------------------------


def test_onboard_interactive_creates_a_lark_app_by_qr_and_binds_it(lark, server):
    proc = interactive(
        server,
        *("agents", "onboard", "--interactive", "--key", "codex", "--name", "Codex Agent"),
        *("--lark-domain", lark.origin),
        answers=[*ACCEPT_AGENT, "1"],
    )
    registration = scanned(lark, proc)
    app = lark.call(
        lambda fake: fake.approve_registration(
            registration.device_code, app_secret=SECRET, name="Codex from QR", user="Alice"
        )
    )
    result = proc.finish()

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "created agent codex: 'Codex Agent', runtime codex",
        f"bound agent codex to Lark bot {app.app_id} (open_id {app.open_id})",
        f"wrote {lark_file(server)} (mode 0600)",
    ]
    assert lines[3].startswith(f"server reloaded Lark: {app.app_id} ")
    # the QR code is drawn, with the link beside it (the SDK's query, prefilled with the name)
    assert "█" in result.stderr and "▀" in result.stderr
    [link] = [line for line in result.stderr.splitlines() if line.startswith(lark.origin)]
    assert link.startswith(f"{lark.origin}/page/launcher?user_code={registration.user_code}&")
    assert "&from=sdk&tp=sdk&source=python-sdk%2Fpal&name=Codex+Agent" in link
    alice = lark.call(lambda fake: fake.user("Alice").open_id(app.app_id))
    assert f"pal console lark-users add --user-id {alice} --name YOUR_NAME" in result.stderr

    # the device flow, as the accounts host saw it
    forms = lark.call(lambda fake: list(fake.registration_forms))
    assert forms[0] == {"action": "init", "archetype": "PersonalAgent"}
    assert forms[1] == {
        "action": "begin",
        "archetype": "PersonalAgent",
        "auth_method": "client_secret",
        "request_user_info": "open_id tenant_brand",
    }
    assert forms[2:] == [{"action": "poll", "device_code": registration.device_code}] * (
        len(forms) - 2
    )

    assert stat.S_IMODE(os.stat(lark_file(server)).st_mode) == 0o600
    assert json.loads(lark_file(server).read_text()) == {
        "bots": [
            {
                "app_id": app.app_id,
                "app_secret": SECRET,
                "agent": "codex",
                "label": "Codex from QR",
                "open_id": app.open_id,
                "domain": lark.origin,
            }
        ]
    }
    # the server reloaded: it runs the new bot's long connection
    wait_until(lambda: [b["state"] for b in lark_bots(server)] == ["connected"], timeout=30)
    assert lark.call(lambda fake: len(fake.live_connections(app.app_id))) == 1
    [bot] = lark_bots(server)
    assert (bot["app_id"], bot["agent"], bot["open_id"]) == (app.app_id, "codex", app.open_id)


@pytest.mark.parametrize(
    ("end", "message"),
    [
        (
            "deny_registration",
            "the Lark app was not created: the person who scanned refused; run the command "
            "again for a new code, or paste an existing app's App ID and Secret (nothing was "
            "changed)",
        ),
        (
            "expire_registration",
            "the QR code expired before the Lark app was created; run the command again for a "
            "new code, or paste an existing app's App ID and Secret (nothing was changed)",
        ),
    ],
)
def test_update_interactive_refused_or_expired_qr_writes_nothing(lark, server, end, message):
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    proc = interactive(
        server,
        *("agents", "update", "--interactive", "--lark-domain", lark.origin),
        answers=["codex", "Renamed", "", "", "1"],
    )
    registration = scanned(lark, proc)
    lark.call(lambda fake: getattr(fake, end)(registration.device_code))
    result = proc.finish()

    assert last_error(result) == message
    assert result.stdout == ""
    assert not lark_file(server).exists()
    agent = httpx.get(f"{server.url}/api/agents/codex").json()["agent"]
    assert agent["display_name"] == "Codex"  # the answers were not saved either
    assert lark_bots(server) == []


# -- paste, rebind, unbind ---------------------------------------------------------------------


def test_update_interactive_paste_with_a_wrong_secret_is_refused_before_writing(lark, server):
    lark.call(lambda fake: fake.add_app("cli_pasted", SECRET))
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    proc = interactive(
        server,
        *("agents", "update", "--interactive"),
        answers=[
            *("codex", "Renamed", "", "", "2", "cli_pasted", OTHER_SECRET),
            *("http://lark.example.com", lark.origin),  # a bad origin is asked again
        ],
    )
    result = proc.finish()

    assert "Error: the origin uses http:// for a host that is not loopback: " in result.stderr
    assert last_error(result) == (
        "Lark refused the credentials of app cli_pasted (code 10014: app secret invalid); "
        "check the App ID and App Secret you pasted (nothing was changed)"
    )
    assert not lark_file(server).exists()
    agent = httpx.get(f"{server.url}/api/agents/codex").json()["agent"]
    assert agent["display_name"] == "Codex"


def test_update_interactive_pastes_moves_and_unbinds_the_agents_bot(lark, server):
    lark.call(lambda fake: fake.add_app("cli_a", SECRET))
    lark.call(lambda fake: fake.add_app("cli_b", OTHER_SECRET, "Bot B"))
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    bind_by_file(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": "codex", "domain": lark.origin}
    )
    keep = ["codex", "", "", ""]  # agent key, then the current name, runtime and description

    kept = interactive(server, "agents", "update", "--interactive", answers=[*keep, ""]).finish()
    assert kept.returncode == 0, kept.stderr
    assert "Lark: agent codex is bound to Lark bot cli_a." in kept.stderr
    assert json.loads(lark_file(server).read_text())["bots"][0]["agent"] == "codex"

    moved = interactive(
        server,
        *("agents", "update", "--interactive", "--lark-domain", lark.origin),
        answers=[*keep, "3", "cli_b", OTHER_SECRET],
    ).finish()
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[1] == (
        "bound agent codex to Lark bot cli_b (open_id "
        f"{lark.call(lambda fake: fake.apps['cli_b'].open_id)}); Lark bot cli_a is no longer "
        "bound (its credential stays)"
    )
    saved = json.loads(lark_file(server).read_text())["bots"]
    assert [(b["app_id"], b["agent"], b["label"]) for b in saved] == [
        ("cli_a", None, ""),
        ("cli_b", "codex", "Bot B"),
    ]
    wait_until(lambda: {b["app_id"]: b["agent"] for b in lark_bots(server)}["cli_b"] == "codex")

    unbound = interactive(
        server, "agents", "update", "--interactive", answers=[*keep, "4"]
    ).finish()
    assert unbound.returncode == 0, unbound.stderr
    assert unbound.stdout.splitlines()[1] == (
        f"unbound agent codex from Lark bot cli_b (its credential stays in {lark_file(server)})"
    )
    saved = json.loads(lark_file(server).read_text())["bots"]
    assert [(b["app_id"], b["agent"], b["app_secret"]) for b in saved] == [
        ("cli_a", None, SECRET),
        ("cli_b", None, OTHER_SECRET),
    ]
    assert stat.S_IMODE(os.stat(lark_file(server)).st_mode) == 0o600
    assert {b["agent"] for b in lark_bots(server)} == {None}


def test_update_interactive_asks_before_taking_a_bot_from_another_agent(lark, server):
    lark.call(lambda fake: fake.add_app("cli_a", SECRET))
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    ok(console(server, "agents", "create", "--key", "rev", "--name", "Reviewer"))
    bind_by_file(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": "codex", "domain": lark.origin}
    )
    before = lark_file(server).read_bytes()
    answers = ["rev", "", "", "", "2", "cli_a", SECRET]

    declined = interactive(server, "agents", "update", "--interactive", answers=[*answers, "n"])
    result = declined.finish()
    assert result.returncode == 0, result.stderr
    assert "Lark bot cli_a is bound to agent codex; move it to rev? [y/N]" in result.stderr
    assert lark_file(server).read_bytes() == before

    taken = interactive(server, "agents", "update", "--interactive", answers=[*answers, "y"])
    assert taken.finish().returncode == 0
    [bot] = json.loads(lark_file(server).read_text())["bots"]
    assert bot["agent"] == "rev"


# -- input that ends ---------------------------------------------------------------------------


def test_interactive_without_answers_fails_with_a_clear_message(server):
    result = console(server, "agents", "onboard", "--interactive", input="")
    assert last_error(result, 2) == (
        "no answer to 'Agent key': the input ended (or Ctrl-C). --interactive asks questions: "
        "run it in a terminal or pipe the answers in, one a line; or give the command's "
        "options instead of --interactive"
    )
    assert "Traceback" not in result.stderr
    assert httpx.get(f"{server.url}/api/agents").json()["agents"] == []

    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    ended = console(server, "agents", "update", "--interactive", input="codex\nRenamed\n\n\n")
    assert last_error(ended, 2).startswith("no answer to 'Choice': the input ended")
    assert "Traceback" not in ended.stderr
    agent = httpx.get(f"{server.url}/api/agents/codex").json()["agent"]
    assert agent["display_name"] == "Codex"
    assert not lark_file(server).exists()


# -- lark send and lark daemon ------------------------------------------------------------------


def test_console_lark_send_reaches_the_platform_with_the_receive_id_type(lark, server):
    lark.call(lambda fake: fake.add_app("cli_a", SECRET))
    lark.call(lambda fake: fake.add_chat("oc_team", "group", ["cli_a"]))
    bind_by_file(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": None, "domain": lark.origin}
    )

    to_chat = console(server, "lark", "send", "--app-id", "cli_a", "--to", "oc_team", "hello team")
    to_user = console(
        server,
        *("lark", "send", "--app-id", "cli_a", "--to", "ou_someone", "--to-type", "open_id"),
        "hello you",
    )
    sent = lark.call(lambda fake: list(fake.messages))
    assert [(m["receive_id_type"], m["receive_id"], m["body"]["content"]) for m in sent] == [
        ("chat_id", "oc_team", json.dumps({"text": "hello team"})),
        ("open_id", "ou_someone", json.dumps({"text": "hello you"})),
    ]
    assert ok(to_chat) == (
        f"sent Lark message {sent[0]['message_id']} to chat_id oc_team via cli_a\n"
    )
    assert ok(to_user).startswith(f"sent Lark message {sent[1]['message_id']} to open_id ")

    outside = console(server, "lark", "send", "--app-id", "cli_a", "--to", "oc_elsewhere", "hi")
    assert error_line(outside) == (
        "Lark refused the message (code 230002: Bot/User can NOT be out of the chat.); check "
        "--to and --to-type, and that bot cli_a is in that chat"
    )
    assert len(lark.call(lambda fake: fake.messages)) == 2
    for result in (to_chat, to_user, outside):
        assert SECRET not in result.stdout + result.stderr
    assert SECRET not in server.log.read_text()


class Daemon:
    """A running ``pal console lark daemon``; its stdout and stderr lines are collected as
    they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pal", "console", "lark", "daemon", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(
                target=self._read, args=(self.proc.stderr, self.err_lines), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                lines.append(line)

    def stop(self, signum: int) -> tuple[int, str]:
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for reader in self._readers:
            reader.join(5)
        return code, "".join(self.err_lines)


@pytest.mark.parametrize(
    ("signum", "secret_from"), [(signal.SIGINT, "option"), (signal.SIGTERM, "lark.json")]
)
def test_console_lark_daemon_prints_events_and_stops_on_a_signal(
    tmp_path, lark, signum, secret_from
):
    lark.call(lambda fake: fake.add_app("cli_a", SECRET))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
    env["PAL_HOME"] = str(home)
    args = ["--app-id", "cli_a"]
    if secret_from == "option":
        args += ["--app-secret", SECRET, "--domain", lark.origin]
    else:
        bot = {"app_id": "cli_a", "app_secret": SECRET, "domain": lark.origin}
        (home / "lark.json").write_text(json.dumps({"bots": [bot]}))
    daemon = Daemon(env, *args)
    try:
        wait_until(lambda: "lark daemon: bot cli_a connected\n" in daemon.err_lines, timeout=30)
        assert lark.call(lambda fake: len(fake.live_connections("cli_a"))) == 1
        sent = lark.call(lambda fake: fake.inject_message("hi daemon", apps=["cli_a"]))
        wait_until(lambda: daemon.lines, timeout=10)
    finally:
        code, err = daemon.stop(signum)

    [line] = daemon.lines
    event = json.loads(line)
    assert event["header"]["event_type"] == "im.message.receive_v1"
    assert event["event"]["message"]["message_id"] == sent["message_id"]
    assert json.loads(event["event"]["message"]["content"]) == {"text": "hi daemon"}
    acks = lark.call(lambda fake: fake.acks_for(sent["pushed"]["cli_a"]))
    assert [a.payload for a in acks] == [{"code": 200}]
    assert code == 0, err
    assert "lark daemon: bot cli_a connected" in err and "Traceback" not in err
    assert SECRET not in err and SECRET not in "".join(daemon.lines)
    wait_until(lambda: not lark.call(lambda fake: fake.live_connections("cli_a")))


def test_console_lark_daemon_with_a_wrong_secret_stops_with_the_reason(tmp_path, lark):
    lark.call(lambda fake: fake.add_app("cli_a", SECRET))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
    env["PAL_HOME"] = str(tmp_path / "home")
    args = ["--app-id", "cli_a", "--app-secret", OTHER_SECRET, "--domain", lark.origin]
    result = subprocess.run(
        [sys.executable, "-m", "pal", "console", "lark", "daemon", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert last_error(result).startswith(
        "Lark bot cli_a stopped: Lark refused the long connection (code 10014: app secret invalid)"
    )
    assert OTHER_SECRET not in result.stdout + result.stderr and result.stdout == ""
