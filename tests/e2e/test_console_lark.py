"""``pal console lark ...``, ``lark-users ...`` and ``agents update --lark-*`` as a user runs
them, against a real ``pal server`` (and the fake Lark Open Platform when the test binds a
bot). Secrets must never appear in any output or in the server's log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_console import as_json, console, error_line, ok

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret-VALUE-never-shown"
# Where the bots of these tests "are": a closed loopback port, so that the server's own
# connections never reach the internet.
NOWHERE = "http://127.0.0.1:9"
AWAY = {"domain": NOWHERE}


def lark_file(server: ServerProcess) -> Path:
    return server.home / "lark.json"


def write_lark(server: ServerProcess, *bots: dict) -> None:
    server.home.mkdir(parents=True, exist_ok=True)
    lark_file(server).write_text(json.dumps({"bots": list(bots)}))


def no_secret_anywhere(server: ServerProcess, *results) -> None:
    for result in results:
        assert SECRET not in result.stdout and SECRET not in result.stderr
    assert SECRET not in server.log.read_text()


def test_console_lark_corrupt_file_leaves_the_server_up_and_lark_off(make_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "lark.json").write_text('{"bots": [{"app_id": "cli_a", "app_secret": "' + SECRET)
    server = make_server()
    [line] = [line for line in server.log.read_text().splitlines() if "pal.lark" in line]
    assert " ERROR pal.lark.manager: Lark is off: " in line
    assert f"{home / 'lark.json'} is not valid JSON (" in line
    assert line.endswith("; fix it, then POST /api/lark/reload")

    status = httpx.get(f"{server.url}/api/lark").json()
    assert status["bots"] == [] and "is not valid JSON" in status["error"]
    listed = console(server, "lark", "list")
    assert ok(listed) == f"lark.json refused: {status['error']}\n"

    write_lark(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": None, "domain": "ftp://x"}
    )
    reload = httpx.post(f"{server.url}/api/lark/reload")
    assert reload.status_code == 422
    assert "bots[0] (app_id cli_a): domain: is not an http(s) origin" in reload.json()["error"]

    write_lark(server)
    assert httpx.post(f"{server.url}/api/lark/reload").json() == {
        "config": str(home / "lark.json"),
        "error": None,
        "bots": [],
    }
    listed = console(server, "lark", "list")
    assert ok(listed).startswith(f"no Lark bots in {home / 'lark.json'}; bind one with: ")
    no_secret_anywhere(server, listed)


def test_console_lark_users_add_list_delete(server: ServerProcess) -> None:
    assert ok(console(server, "lark-users", "list")).startswith("no Lark users yet; ")
    added = console(server, "lark-users", "add", "--user-id", "on_bob", "--name", "Bob")
    assert ok(added) == "added Lark user on_bob (Bob)\n"
    renamed = console(server, "lark-users", "add", "--user-id", "on_bob", "--name", "Robert")
    assert ok(renamed) == "renamed Lark user on_bob (Robert)\n"
    table = ok(console(server, "lark-users", "list"))
    assert "on_bob" in table and "Robert" in table
    [user] = as_json(console(server, "lark-users", "list", "--json"))["users"]
    assert (user["user_id"], user["name"]) == ("on_bob", "Robert")

    bad = console(server, "lark-users", "add", "--user-id", "on bob", "--name", "Bob")
    assert error_line(bad).startswith("invalid request: user_id: ")
    deleted = console(server, "lark-users", "delete", "--user-id", "on_bob")
    assert ok(deleted) == "deleted Lark user on_bob (Robert)\n"
    gone = console(server, "lark-users", "delete", "--user-id", "on_bob")
    assert error_line(gone) == "Lark user 'on_bob' not found"


def test_console_lark_events_and_send_without_bots(server: ServerProcess) -> None:
    assert ok(console(server, "lark", "events")) == "no Lark events yet\n"
    assert as_json(console(server, "lark", "events", "--limit", "5", "--json")) == {"events": []}
    sent = console(server, "lark", "send", "--app-id", "cli_nope", "--to", "oc_1", "hello")
    assert error_line(sent).startswith("Lark bot 'cli_nope' is not in ")
    wrong = console(server, "lark", "send", "--app-id", "a", "--to", "b", "--to-type", "x", "t")
    assert error_line(wrong, 2) == (
        "--to-type must be one of chat_id, open_id, union_id, email, user_id"
    )


def test_console_agents_update_unbind_keeps_the_credential(server: ServerProcess) -> None:
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    write_lark(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": "codex", "domain": NOWHERE}
    )
    unbound = console(server, "agents", "update", "--key", "codex", "--unbind-lark")
    lines = ok(unbound).splitlines()
    assert lines[0] == (
        f"unbound agent codex from Lark bot cli_a (its credential stays in {lark_file(server)})"
    )
    assert lines[1] == f"wrote {lark_file(server)} (mode 0600)"
    assert lines[2].startswith("server reloaded Lark: cli_a ")
    saved = json.loads(lark_file(server).read_text())
    assert saved["bots"][0]["agent"] is None and saved["bots"][0]["app_secret"] == SECRET
    assert stat.S_IMODE(os.stat(lark_file(server)).st_mode) == 0o600
    [bot] = httpx.get(f"{server.url}/api/lark").json()["bots"]
    assert (bot["app_id"], bot["agent"]) == ("cli_a", None)

    again = console(server, "agents", "update", "--key", "codex", "--unbind-lark")
    assert error_line(again) == "agent codex is not bound to a Lark bot; nothing to unbind"
    no_secret_anywhere(server, unbound, again)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lark-app-id", "cli_a"], "give both --lark-app-id and --lark-app-secret"),
        (
            ["--unbind-lark", "--lark-app-id", "cli_a"],
            "--unbind-lark takes no other --lark-* option (nor --rebind-lark)",
        ),
        (
            ["--rebind-lark"],
            "--lark-label, --lark-domain and --rebind-lark go with --lark-app-id and "
            "--lark-app-secret",
        ),
        (
            ["--lark-app-id", "cli_a", "--lark-app-secret", SECRET, "--lark-domain", "http://x.cn"],
            "--lark-domain: uses http:// for a host that is not loopback: use an origin such as "
            "https://open.feishu.cn or https://open.larksuite.com (scheme and host only; http:// "
            "only for 127.0.0.1, localhost or ::1)",
        ),
    ],
)
def test_console_agents_update_lark_usage_errors_write_nothing(server, args, message):
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    result = console(server, "agents", "update", "--key", "codex", *args)
    assert error_line(result, 2) == message
    assert not lark_file(server).exists()
    no_secret_anywhere(server, result)


def test_console_agents_update_lark_refuses_an_unknown_agent_or_a_corrupt_file(server):
    args = ["--lark-app-id", "cli_a", "--lark-app-secret", SECRET]
    unknown = console(server, "agents", "update", "--key", "ghost", *args)
    assert error_line(unknown) == "agent 'ghost' not found"
    assert not lark_file(server).exists()

    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    lark_file(server).write_text("{oops")
    corrupt = console(server, "agents", "update", "--key", "codex", *args)
    assert error_line(corrupt) == (
        f"{lark_file(server)} is not valid JSON (Expecting property name enclosed in double "
        "quotes at line 1 column 2); fix it first (nothing was changed)"
    )
    assert lark_file(server).read_text() == "{oops"
    no_secret_anywhere(server, unknown, corrupt)


def test_console_agents_delete_unbinds_its_lark_bot(server: ServerProcess) -> None:
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    write_lark(
        server, {"app_id": "cli_a", "app_secret": SECRET, "agent": "codex", "domain": NOWHERE}
    )
    deleted = console(server, "agents", "delete", "--key", "codex", "--yes")
    assert ok(deleted).splitlines()[1] == (
        "unbound Lark bot cli_a (its credential stays in lark.json)"
    )
    [bot] = json.loads(lark_file(server).read_text())["bots"]
    assert (bot["agent"], bot["app_secret"]) == (None, SECRET)
    [shown] = httpx.get(f"{server.url}/api/lark").json()["bots"]
    assert shown["agent"] is None
    no_secret_anywhere(server, deleted)


# -- binding, with Lark stubbed in-process ----------------------------------------------------
# Until the fake Lark Open Platform exists, the console runs in-process (CliRunner) against the
# real server, with ``pal.lark.rest`` replaced by a stub that knows one good secret per app.

GOOD = {"cli_a": SECRET, "cli_b": SECRET + "-b"}


class StubLarkApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"Lark API error {code}: {msg}")
        self.code, self.msg, self.status = code, msg, status


class StubLarkUnreachable(Exception):
    pass


class StubLarkRest:
    calls: list[tuple[str, str]] = []

    def __init__(self, domain: str, app_id: str, app_secret: str, **_: object) -> None:
        self.domain, self.app_id, self.app_secret = domain, app_id, app_secret

    async def bot_info(self) -> dict:
        StubLarkRest.calls.append((self.domain, self.app_id))
        if "127.0.0.1:1" in self.domain:
            raise StubLarkUnreachable("connection refused")
        if GOOD.get(self.app_id) != self.app_secret:
            raise StubLarkApiError(10014, "app secret invalid")
        return {"open_id": f"ou_{self.app_id}", "app_name": f"App {self.app_id}"}

    async def aclose(self) -> None:
        pass


@pytest.fixture
def bind(server: ServerProcess, monkeypatch: pytest.MonkeyPatch):
    """``bind(*args)``: ``pal console --server URL agents update ARGS`` in-process, with Lark
    stubbed; returns the CliRunner result (stdout and stderr apart)."""
    import types

    from typer.testing import CliRunner

    from pal.cli.main import app

    stub = types.ModuleType("pal.lark.rest")
    stub.LarkRest = StubLarkRest  # type: ignore[attr-defined]
    stub.LarkApiError = StubLarkApiError  # type: ignore[attr-defined]
    stub.LarkUnreachable = StubLarkUnreachable  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "pal.lark.rest", stub)
    StubLarkRest.calls = []
    ok(console(server, "agents", "create", "--key", "codex", "--name", "Codex"))
    ok(console(server, "agents", "create", "--key", "rev", "--name", "Reviewer"))

    def run(*args: str):
        env = {k: v for k, v in server.env.items() if k.startswith(("PAL_", "LOCK_"))}
        result = CliRunner().invoke(
            app, ["console", "--server", server.url, "agents", "update", *args], env=env
        )
        assert SECRET not in result.stdout and SECRET not in result.stderr
        assert SECRET not in server.log.read_text()
        return result

    return run


def one_error(result, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("error: ").removesuffix("\n")


def creds(app_id: str = "cli_a", secret: str | None = None) -> list[str]:
    secret = secret or GOOD[app_id]
    return ["--lark-app-id", app_id, "--lark-app-secret", secret, "--lark-domain", NOWHERE]


def test_console_lark_bind_wrong_secret_writes_nothing(server, bind):
    result = bind("--key", "codex", *creds(secret="wrong-secret-value"))
    assert one_error(result) == (
        "Lark refused the credentials of app cli_a (code 10014: app secret invalid); check "
        "--lark-app-id and --lark-app-secret (nothing was changed)"
    )
    assert result.stdout == "" and not lark_file(server).exists()

    write_lark(
        server, {"app_id": "cli_b", "app_secret": GOOD["cli_b"], "agent": "rev", "domain": NOWHERE}
    )
    before = lark_file(server).read_bytes()
    result = bind("--key", "codex", *creds(secret="wrong-secret-value"), "--runtime", "claude")
    assert one_error(result).startswith("Lark refused the credentials of app cli_a")
    assert lark_file(server).read_bytes() == before
    agent = httpx.get(f"{server.url}/api/agents/codex").json()["agent"]
    assert agent["runtime"] == "codex"  # nothing was written on the server either

    unreachable = bind("--key", "codex", *creds()[:4], "--lark-domain", "http://127.0.0.1:1")
    assert one_error(unreachable).startswith("cannot reach Lark at http://127.0.0.1:1 (")
    assert lark_file(server).read_bytes() == before


def test_console_lark_bind_writes_0600_resolves_open_id_and_reloads(server, bind):
    result = bind("--key", "codex", *creds(), "--lark-label", "Codex bot")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "bound agent codex to Lark bot cli_a (open_id ou_cli_a)",
        f"wrote {lark_file(server)} (mode 0600)",
        result.stdout.splitlines()[2],
    ]
    assert result.stdout.splitlines()[2].startswith("server reloaded Lark: cli_a ")
    assert stat.S_IMODE(os.stat(lark_file(server)).st_mode) == 0o600
    [saved] = json.loads(lark_file(server).read_text())["bots"]
    assert saved == {
        "app_id": "cli_a",
        "app_secret": SECRET,
        "agent": "codex",
        "label": "Codex bot",
        "open_id": "ou_cli_a",
        "domain": NOWHERE,
    }
    [shown] = httpx.get(f"{server.url}/api/lark").json()["bots"]
    assert (shown["app_id"], shown["agent"], shown["open_id"]) == ("cli_a", "codex", "ou_cli_a")

    listed = console(server, "lark", "list")
    assert "cli_a" in ok(listed) and "Codex bot" in listed.stdout
    no_secret_anywhere(server, listed)


def test_console_lark_bind_a_second_bot_needs_rebind_and_moves_the_agent(server, bind):
    assert bind("--key", "codex", *creds("cli_a")).exit_code == 0
    refused = bind("--key", "codex", *creds("cli_b"))
    assert one_error(refused) == (
        "agent codex is already bound to Lark bot cli_a; add --rebind-lark to move it to "
        "cli_b, or --unbind-lark first"
    )
    assert [b["app_id"] for b in json.loads(lark_file(server).read_text())["bots"]] == ["cli_a"]
    assert StubLarkRest.calls == [(NOWHERE, "cli_a")]  # the second one was refused before Lark

    taken = bind("--key", "rev", *creds("cli_a"))
    assert one_error(taken) == (
        "Lark bot cli_a is bound to agent codex; add --rebind-lark to bind it to rev instead"
    )

    moved = bind("--key", "codex", *creds("cli_b"), "--rebind-lark", "--json")
    assert moved.exit_code == 0, moved.stderr
    answer = json.loads(moved.stdout)
    assert answer["agent"]["key"] == "codex"
    assert answer["lark"]["bot"]["app_secret"].endswith("…(redacted)")
    assert answer["lark"]["message"] == (
        "bound agent codex to Lark bot cli_b (open_id ou_cli_b); Lark bot cli_a is no longer "
        "bound (its credential stays)"
    )
    saved = json.loads(lark_file(server).read_text())["bots"]
    assert [(b["app_id"], b["agent"], b["label"]) for b in saved] == [
        ("cli_a", None, "App cli_a"),
        ("cli_b", "codex", "App cli_b"),
    ]
    status = httpx.get(f"{server.url}/api/lark").json()
    assert [(b["app_id"], b["agent"]) for b in status["bots"]] == [
        ("cli_a", None),
        ("cli_b", "codex"),
    ]


def test_console_lark_bind_no_reload_only_writes_the_file(server, bind):
    result = bind("--key", "codex", *creds(), "--no-reload")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"not reloaded (--no-reload); apply it with: curl -s -X POST {server.url}/api/lark/reload"
    )
    assert json.loads(lark_file(server).read_text())["bots"][0]["agent"] == "codex"
    assert httpx.get(f"{server.url}/api/lark").json()["bots"] == []
    status = httpx.post(f"{server.url}/api/lark/reload").json()
    assert [b["app_id"] for b in status["bots"]] == ["cli_a"]
