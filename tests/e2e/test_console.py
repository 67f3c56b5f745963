"""``pal console`` as a user runs it: the real binary against a real server process.

Each command is a new process, so the tests group several commands each.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from typing import Any

import pytest

from pal.client import ServerClient
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

DEAD = "http://127.0.0.1:1"


def console(
    server: ServerProcess, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return server.pal("console", *args, input=input)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The message of the one ``error: ...`` line a failed command prints on stderr."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("error: ").removesuffix("\n")


def test_console_quick_start_onboard_send_then_inbox(server: ServerProcess) -> None:
    onboarded = console(
        server, "agents", "onboard", "--key", "codex", "--name", "Codex Agent", "--runtime", "codex"
    )
    assert ok(onboarded) == "created agent codex: 'Codex Agent', runtime codex\n"

    sent = console(
        server, "send", "--chat", "general", "--from", "alice", "--mention", "codex", "hello"
    )
    assert ok(sent) == (
        "message 1 posted in general; delivered to codex (mention_nonmember, pending)\n"
    )

    inbox = as_json(console(server, "inbox", "--agent", "codex", "--json"))
    assert inbox["agent"] == "codex"
    [message] = inbox["messages"]
    assert (message["id"], message["content"], message["sender"]) == (1, "hello", "alice")
    assert (message["room"], message["mentions"]) == ("general", ["codex"])
    assert (message["delivery_reason"], message["delivery_status"]) == (
        "mention_nonmember",
        "pending",
    )

    table = ok(console(server, "inbox", "--agent", "codex"))
    assert "hello" in table and "alice" in table and "mention_nonmember" in table


def test_console_reads_health_rooms_and_messages(server: ServerProcess) -> None:
    assert ok(console(server, "health")) == f"ok: pal 0.1.0 at {server.url} (database: sqlite)\n"

    with ServerClient(server.url) as client:
        topic = str(client.create_topic("general", "Investigation")["topic"]["id"])

    def send(*args: str) -> int:
        payload = as_json(console(server, "send", "--from", "bob", "--json", *args))
        return int(payload["message"]["id"])

    def ids(*args: str) -> list[int]:
        payload = as_json(console(server, "messages", "--json", *args))
        return [m["id"] for m in payload["messages"]]

    first = send("--room", "general", "deploy failed [bold]x[/bold]")
    reply = send("--chat", "general", "--parent", str(first), "looking")
    noted = send("--chat", "general", "--topic", topic, "notes")

    assert ids() == [first, reply, noted]
    assert ids("--room", "general", "--parent", str(first), "--q", "looking") == [reply]
    assert ids("--chat", "general", "--topic", topic, "--after", str(first), "--limit", "1") == [
        noted
    ]

    table = ok(console(server, "messages", "--chat", "general"))
    assert "deploy failed [bold]x[/bold]" in table  # user text is never read as Rich markup
    assert "looking" in table and "notes" in table

    rooms = as_json(console(server, "chats", "--json"))["rooms"]
    assert [(r["name"], r["last_message_id"]) for r in rooms] == [("general", noted)]
    assert "general" in ok(console(server, "chats"))


def test_console_manages_agents(server: ServerProcess) -> None:
    created = console(
        server,
        *("agents", "create", "--key", "rev", "--name", "Reviewer"),
        *("--runtime", "claude", "--desc", "Reviews code"),
    )
    assert ok(created) == "created agent rev: 'Reviewer', runtime claude\n"
    again = console(server, "agents", "create", "--key", "rev", "--name", "Reviewer 2")
    assert ok(again) == "updated agent rev: 'Reviewer 2', runtime claude\n"

    update = ("agents", "update", "--key", "rev", "--runtime", "codex", "--json")
    agent = as_json(console(server, *update))["agent"]
    assert (agent["display_name"], agent["runtime"], agent["description"]) == (
        "Reviewer 2",
        "codex",
        "Reviews code",
    )
    [listed] = as_json(console(server, "agents", "list", "--json"))["agents"]
    assert listed == agent

    refused = console(server, "agents", "delete", "--key", "rev")
    assert error_line(refused, code=2).endswith("add --yes to confirm")
    assert "Reviews code" in ok(console(server, "agents", "list"))

    deleted = console(server, "agents", "delete", "--key", "rev", "--yes")
    assert ok(deleted) == "deleted agent rev (removed 0 room memberships and 0 active deliveries)\n"
    assert ok(console(server, "agents", "list")).startswith("no agents yet")


def test_console_interactive_onboard_and_update(server: ServerProcess) -> None:
    # key, display name, runtime (blank: codex), description, computer id (blank: none),
    # then Lark setup (blank: skip)
    answers = "helper\nHelper Bot\n\nAnswers questions\n\n\n"
    onboarded = console(server, "agents", "onboard", "--interactive", "--json", input=answers)
    agent = as_json(onboarded)["agent"]  # prompts go to stderr, so stdout is JSON
    assert (agent["key"], agent["display_name"], agent["runtime"]) == (
        "helper",
        "Helper Bot",
        "codex",
    )
    assert (agent["description"], agent["computer_id"]) == ("Answers questions", None)

    # blank answers keep the current values; an invalid runtime is asked again
    answers = "helper\n\nbogus\nclaude\n\n\n"
    updated = console(server, "agents", "update", "--interactive", input=answers)
    assert ok(updated).endswith("updated agent helper: 'Helper Bot', runtime claude\n")
    assert "'bogus' is not one of" in updated.stderr

    missing = console(server, "agents", "update", "--interactive", input="ghost\n")
    assert missing.returncode == 1
    assert missing.stderr.endswith(": \nerror: agent 'ghost' not found\n")  # after the prompt


def test_console_errors_are_one_line(server: ServerProcess) -> None:
    assert error_line(console(server, "messages", "--chat", "nope")) == "room 'nope' not found"
    onboard = ("agents", "onboard", "--key", "x", "--name", "X", "--computer-id", "machine_nope")
    assert error_line(console(server, *onboard)) == "computer 'machine_nope' not found"
    bad_key = console(server, "agents", "create", "--key", "no spaces", "--name", "X")
    assert error_line(bad_key).startswith("invalid request: key: String should match pattern")

    bad_runtime = ("agents", "create", "--key", "x", "--name", "X", "--runtime", "vim")
    result = console(server, *bad_runtime)
    assert result.returncode == 2 and "'vim' is not one of" in result.stderr
    no_key = console(server, "agents", "onboard", "--name", "X")
    assert error_line(no_key, code=2) == "give --key and --name, or use --interactive"

    bad_url = console(server, "--server", "localhost:4127", "health")
    assert error_line(bad_url, code=2).endswith("must start with http:// or https://")
    unreachable = console(server, "--server", DEAD, "chats")
    assert error_line(unreachable) == (
        f"cannot reach the pal server at {DEAD} (connection refused); "
        "is `pal server` running? set --server or PAL_SERVER"
    )
    assert unreachable.stdout == ""


def test_console_server_flag_beats_lock_server_url_beats_pal_server(
    server: ServerProcess,
) -> None:
    env = {**server.env, "LOCK_SERVER_URL": server.url, "PAL_SERVER": DEAD}
    assert ok(replace(server, env=env).pal("console", "health")).startswith("ok: ")
    env = {**server.env, "LOCK_SERVER_URL": DEAD, "PAL_SERVER": server.url}
    assert ok(replace(server, env=env).pal("console", "--server", server.url, "health"))
