"""The contract test with the real codex CLI: what "codex is validated" means in pal.

The pinned ``@openai/codex`` (tests/realcodex.py installs it from the npm registry into the
ignored ``.cache/codex`` folder) is driven offline by a scripted model on loopback
(tests/fakes/model_server.py; how and why: ../shared/reference/codex-offline.md). Nothing here
is faked on pal's side:

- the codex adapter's argv really runs the real binary, and its parser reads the real JSONL
  (thread id, final message, usage) and recognises the real "thread not found" failure;
- end to end, a real server and a real daemon (no --dry-run) deliver a message to an agent of
  runtime codex; codex runs the ``pal cli send`` command the model asks for inside its
  workspace-write sandbox, the reply lands in the room, the run completes, and a second
  message resumes the same codex thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pal.runtimes.base import EventParser, Launch, LaunchRequest
from pal.runtimes.registry import get_adapter
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.e2e.daemon_process import DaemonProcess, provision
from tests.fakes.model_server import ModelServer, RecordedRequest, user_texts, write_codex_home
from tests.realcodex import CODEX_VERSION, ensure_codex

pytestmark = pytest.mark.e2e

MakeDaemon = Callable[..., DaemonProcess]
FINAL = "codex turn done"
FIRST_REPLY = "hello from real codex"
SECOND_REPLY = "hello again from real codex"
RUN_TIMEOUT = 90.0  # a real codex turn takes about a second here; generous for a loaded CI


@pytest.fixture(scope="session")
def codex_binary() -> Path:
    """The pinned real codex executable (installed on first use; never skipped)."""
    return ensure_codex()


@pytest.fixture
def model() -> Iterator[ModelServer]:
    with ModelServer(
        [f'pal cli send "{FIRST_REPLY}"', f'pal cli send "{SECOND_REPLY}"'], final_text=FINAL
    ) as server:
        yield server


# -- the adapter against the real binary ------------------------------------------------------


def run_launch(launch: Launch, parser: EventParser) -> subprocess.CompletedProcess[str]:
    """Run what the adapter launched the way the supervisor does (stdin /dev/null, own
    session), feeding every stdout/stderr line to ``parser``."""
    done = subprocess.run(
        launch.argv,
        cwd=launch.cwd,
        env=launch.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        start_new_session=True,
    )
    for line in done.stdout.splitlines():
        parser.feed(line)
    for line in done.stderr.splitlines():
        parser.feed_stderr(line)
    return done


def thread_ids(requests: list[RecordedRequest]) -> set[str]:
    return {r.headers.get("thread-id", "") for r in requests}


def test_codex_adapter_runs_the_real_binary_and_reads_its_events(
    codex_binary: Path, model: ModelServer, tmp_path: Path
) -> None:
    adapter = get_adapter("codex")
    codex_home = write_codex_home(tmp_path / "codex-home", model.base_url)
    config = {"codex_home": str(codex_home), "binary": str(codex_binary)}
    probe = adapter.probe(config)
    assert probe.available, probe.error
    assert probe.version is not None and CODEX_VERSION in probe.version
    workspace = tmp_path / "work"
    workspace.mkdir()
    # No pal on this run's PATH: the command fails, which codex reports to the model.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PAL_RUN_ID": "1"}

    def request(resume_id: str | None) -> LaunchRequest:
        return LaunchRequest(
            prompt="say hello", cwd=str(workspace), env=env, config=config,
            resume_id=resume_id, run_id=1,
        )  # fmt: skip

    fresh = request(None)
    parser = adapter.parser(fresh)
    done = run_launch(adapter.launch(probe, fresh), parser)
    assert done.returncode == 0, done.stderr
    [thread_id] = thread_ids(model.responses())
    assert parser.session_id == thread_id
    assert parser.final_text == FINAL
    assert parser.terminal and parser.error is None
    assert parser.usage is not None
    assert (parser.usage["input_tokens"], parser.usage["output_tokens"]) == (20, 10)
    assert parser.usage["scope"] == "thread"

    resumed = request(thread_id)
    parser = adapter.parser(resumed)
    done = run_launch(adapter.launch(probe, resumed), parser)
    assert done.returncode == 0, done.stderr
    assert parser.session_id == thread_id
    assert thread_ids(model.responses()) == {thread_id}
    assert parser.usage is not None and parser.usage["output_tokens"] == 20  # thread total
    assert not parser.resume_missed(0)

    # A thread this CODEX_HOME does not have: codex exits 1 with no JSONL, and the parser
    # says the resume missed (the runner then starts a fresh session once).
    missing = str(uuid.uuid4())
    gone = request(missing)
    parser = adapter.parser(gone)
    done = run_launch(adapter.launch(probe, gone), parser)
    assert (done.returncode, done.stdout) == (1, "")
    assert f"thread/resume failed: no rollout found for thread id {missing}" in done.stderr
    assert parser.session_id is None
    assert parser.resume_missed(1)


# -- end to end: server, daemon, real codex ---------------------------------------------------


def api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, server.url + path, timeout=10, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def post(server: ServerProcess, content: str) -> int:
    body = {"room": "general", "sender": "alice", "mentions": ["codex"], "content": content}
    return int(api(server, "POST", "/api/messages", json=body)["message"]["id"])


def reply_to(server: ServerProcess, message_id: int, daemon: DaemonProcess) -> dict[str, Any]:
    """Wait for codex's reply in the thread of ``message_id``; fail early if a run failed."""

    def found() -> dict[str, Any] | None:
        failed = [r for r in runs(server) if r["status"] in ("failed", "lost")]
        assert not failed, f"run failed: {failed}\n{daemon.output()[-4000:]}"
        replies = api(server, "GET", "/api/messages", params={"room": "general"})["messages"]
        mine = [m for m in replies if m["sender"] == "codex" and m["id"] > message_id]
        return mine[0] if mine else None

    answer: dict[str, Any] = wait_until(found, timeout=RUN_TIMEOUT, interval=0.1)
    return answer


def runs(server: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(server, "GET", "/api/runs", params={"agent": "codex"})["runs"]
    return sorted(found, key=lambda r: r["id"])


def completed_run(server: ServerProcess, count: int) -> dict[str, Any]:
    """Wait until ``count`` runs exist and the newest is finished; returns it."""

    def finished() -> dict[str, Any] | None:
        found = runs(server)
        if len(found) == count and found[-1]["status"] != "running":
            return found[-1]
        return None

    run: dict[str, Any] = wait_until(finished, timeout=RUN_TIMEOUT, interval=0.1)
    return run


def printed_thread_id(server: ServerProcess, run_id: int) -> str:
    """The thread id in the ``thread.started`` event codex printed during this run (read back
    from the run's stored output)."""
    answer = api(server, "GET", f"/api/runs/{run_id}/output", params={"stream": "stdout"})
    stdout = "".join(chunk["data"] for chunk in answer["chunks"])
    started = [
        event["thread_id"]
        for event in (json.loads(line) for line in stdout.splitlines() if line.startswith("{"))
        if event.get("type") == "thread.started"
    ]
    assert len(started) == 1, stdout
    return str(started[0])


def test_real_codex_answers_in_the_room_and_resumes_its_thread(
    codex_binary: Path, model: ModelServer, server: ServerProcess, make_daemon: MakeDaemon,
    tmp_path: Path,
) -> None:  # fmt: skip
    codex_home = write_codex_home(tmp_path / "codex-home", model.base_url)
    computer_id, api_key = provision(server)
    agent = {
        "agent_key": "codex",
        "display_name": "Codex",
        "runtime": "codex",
        "computer_id": computer_id,
        "config": {"codex_home": str(codex_home), "binary": str(codex_binary)},
    }
    api(server, "POST", "/api/agents/onboard", json=agent)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")])
    daemon = make_daemon(server, "--interval", "200", api_key=api_key, extra_env={"PATH": path})

    # First message: a fresh codex thread; the model has codex run `pal cli send` in its
    # sandbox, which reaches the daemon's loopback API with the run's own credential.
    first_id = post(server, "please say hello")
    reply = reply_to(server, first_id, daemon)
    assert (reply["content"], reply["parent_id"]) == (FIRST_REPLY, first_id)
    first = completed_run(server, 1)
    assert (first["status"], first["exit_code"]) == ("completed", 0), daemon.output()[-4000:]
    [thread_id] = thread_ids(model.responses())
    assert printed_thread_id(server, first["id"]) == thread_id
    [session] = api(server, "GET", "/api/sessions", params={"agent": "codex"})["sessions"]
    assert session["id"] == first["session_id"]
    assert session["runtime_session_id"] == thread_id
    assert first["usage"]["output_tokens"] == 10
    [ask, answer] = model.responses()
    assert any("please say hello" in text for text in user_texts(ask.input))
    [output] = [item for item in answer.input if item.get("type") == "function_call_output"]
    assert "Process exited with code 0" in output["output"], output

    # Second message in the same place: codex resumes the same thread, so the model sees the
    # first conversation replayed before the new prompt.
    second_id = post(server, "and once more")
    reply = reply_to(server, second_id, daemon)
    assert (reply["content"], reply["parent_id"]) == (SECOND_REPLY, second_id)
    second = completed_run(server, 2)
    assert (second["status"], second["exit_code"]) == ("completed", 0), daemon.output()[-4000:]
    assert second["session_id"] == first["session_id"]
    assert printed_thread_id(server, second["id"]) == thread_id
    assert thread_ids(model.responses()) == {thread_id}
    resumed = model.responses()[2]
    metadata = json.loads(resumed.headers["x-codex-turn-metadata"])
    assert metadata["history_initialization"] == "cold_resume"
    assert metadata["sandbox_mode"] == "workspace-write"
    texts = user_texts(resumed.input)
    assert any("please say hello" in t for t in texts) and "and once more" in texts[-1]
    replayed = [
        item.get("call_id") for item in resumed.input if item.get("type") == "function_call"
    ]
    assert replayed == ["call_1"], "the first conversation's command call is replayed"
    [session] = api(server, "GET", "/api/sessions", params={"agent": "codex"})["sessions"]
    assert session["runtime_session_id"] == thread_id
    assert len(model.responses()) == 4
