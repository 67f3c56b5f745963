"""RunExecutor pieces that need no process: the run's environment, action bookkeeping."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pal.daemon.executor import Job
from pal.daemon.local_api import RunCredentials
from pal.daemon.prompt import CONTEXT_MESSAGES, DIGEST_MESSAGES
from pal.daemon.runner import Probes, RunExecutor, _last_error_line, run_environment
from pal.daemon.server_api import ServerApi

T = TypeVar("T")


def test_the_run_environment_hides_pal_secrets_and_sets_the_run_variables(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "CODEX_HOME": "/home/me/.codex",
        "OPENAI_API_KEY": "sk-user",
        "PAL_API_KEY": "sk_machine_secret",
        "PAL_COMPUTER_SECRET": "s3cret",
        "LOCK_DAEMON_TOKEN": "local-token",
        "PAL_SERVER": "http://server",
        "CLAUDECODE": "1",
    }
    env = run_environment(
        base,
        run_id=12,
        credential="run_abc",
        local_url="http://127.0.0.1:4137",
        agent_key="codex",
        room="general",
        home=tmp_path,
    )
    assert "sk_machine_secret" not in env.values() and "local-token" not in env.values()
    assert not [k for k in env if k.startswith("LOCK_") and k != "LOCK_DAEMON_URL"]
    assert "CLAUDECODE" not in env and "PAL_SERVER" not in env
    assert env["OPENAI_API_KEY"] == "sk-user" and env["CODEX_HOME"] == "/home/me/.codex"
    assert env["PAL_RUN_ID"] == "12" and env["PAL_RUN_AUTH"] == "run_abc"
    assert env["LOCK_DAEMON_URL"] == "http://127.0.0.1:4137"
    assert env["PAL_RUN_AGENT"] == "codex" and env["PAL_ROOM"] == "general"
    assert env["PATH"].endswith("/usr/bin")
    # what the run gets from pal never has KEY, TOKEN or SECRET in its name
    ours = set(env) - set(base)
    assert not [k for k in ours if any(w in k for w in ("KEY", "TOKEN", "SECRET"))]


def test_the_last_error_line_prefers_a_line_that_says_error() -> None:
    lines = ["WARNING: proceeding", "Error: thread/resume failed: boom", "  0: <unknown>"]
    assert _last_error_line(lines) == "Error: thread/resume failed: boom"
    assert _last_error_line(["", "just this"]) == "just this"
    assert _last_error_line([]) is None


async def test_an_action_for_a_run_this_daemon_does_not_have_is_reported_failed_once(
    tmp_path: Path,
) -> None:
    reports: list[tuple[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        reports.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"action": {}})

    api = ServerApi("http://server.test", "sk", transport=httpx.MockTransport(answer))

    async def retrying(call: Callable[[], Awaitable[T]]) -> T:
        return await call()

    executor = RunExecutor(
        api,
        retrying,
        home=tmp_path,
        local_url="http://127.0.0.1:4137",
        credentials=RunCredentials(),
        probes=Probes(),
        kill_grace=1,
    )
    request = {"id": 5, "run_id": 9, "action": "kill", "status": "sent"}
    await executor.handle_actions([request, {"bad": "request"}])
    await executor.handle_actions([request])  # the next heartbeat repeats it
    await executor.aclose()
    await api.aclose()
    assert reports == [
        (
            "/api/runs/9/actions/5",
            {"status": "failed", "error": "run 9 is not running on this daemon"},
        )
    ]


async def test_a_digest_reads_the_messages_it_covers_and_a_mention_the_ones_before(
    tmp_path: Path,
) -> None:
    asked: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/messages":
            asked.append(dict(request.url.params))
            return httpx.Response(200, json={"messages": [{"id": 30}]})
        return httpx.Response(200, json={"message": {"id": 31, "room": "general"}})

    api = ServerApi("http://server.test", "sk", transport=httpx.MockTransport(answer))

    async def retrying(call: Callable[[], Awaitable[T]]) -> T:
        return await call()

    executor = RunExecutor(
        api,
        retrying,
        home=tmp_path,
        local_url="http://127.0.0.1:4137",
        credentials=RunCredentials(),
        probes=Probes(),
        kill_grace=1,
    )
    base = {"id": 1, "attempt": 1, "room_id": "room_1", "message_id": 31}
    digest = {**base, "reason": "digest", "topic_id": None, "digest_after": 12}
    mention = {**base, "reason": "mention", "topic_id": 4, "digest_after": None}
    for delivery in (digest, mention):
        job = Job(delivery, {"key": "codex"}, {"id": 1}, "daemon_1", None)
        message, context = await executor._conversation(job)
        assert message["id"] == 31 and context == [{"id": 30}]
    await executor.aclose()
    await api.aclose()
    assert asked == [
        # the newest DIGEST_MESSAGES of (digest_after, message_id], whatever their topic
        {"room": "room_1", "after": "12", "before": "32", "limit": str(DIGEST_MESSAGES)},
        {"room": "room_1", "before": "31", "limit": str(CONTEXT_MESSAGES), "topic": "4"},
    ]
