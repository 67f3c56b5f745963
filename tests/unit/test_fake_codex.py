"""The fake codex (tests/fakes/codex.py) run as a real process: it must behave like codex
0.171.0 where the daemon can see it, or the runs tests prove nothing."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pal.runtimes.base import LaunchRequest
from pal.runtimes.codex import CodexAdapter, CodexParser
from tests.conftest import wait_until
from tests.fakes import install_fakes
from tests.fakes.codex import NOT_TRUSTED, RESUME_MISS_MESSAGE

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shims and signals")

TIMEOUT = 30
DEFAULT_REPLY = "fake codex: done (run 5)"
MISSING = "0199a213-81c0-7800-8aa1-bbab2a035a53"


@dataclass
class Fake:
    bin_dir: Path
    home: Path
    work: Path
    records: Path
    pal_log: Path
    env: dict[str, str]

    def run(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.bin_dir / "codex"), *args],
            cwd=cwd or self.work,
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )

    def start(self, *args: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(self.bin_dir / "codex"), *args],
            cwd=self.work,
            env=self.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def pal_calls(self) -> list[list[str]]:
        return [p.read_text().splitlines() for p in sorted(self.pal_log.glob("*.args"))]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    bin_dir = install_fakes(tmp_path / "bin")
    pal_log = tmp_path / "pal-log"
    pal_log.mkdir()
    # A stub `pal` that records its arguments (one per line) and exits $PAL_STUB_EXIT.
    pal = bin_dir / "pal"
    pal.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > {pal_log}/$$.args\n"
        'echo "sent"\n'
        "exit ${PAL_STUB_EXIT:-0}\n"
    )
    pal.chmod(0o755)
    home, work, records = tmp_path / "codex-home", tmp_path / "work", tmp_path / "records"
    for folder in (home, work, records):
        folder.mkdir()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "PAL_RUN_ID": "5",
        "FAKE_RECORD_DIR": str(records),
    }
    return Fake(bin_dir, home, work, records, pal_log, env)


def events(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith(b"{")]


def kinds(stdout: bytes) -> list[str]:
    return [str(e.get("type")) for e in events(stdout)]


def launch_and_run(fake: Fake, resume_id: str | None) -> tuple[CodexParser, int, list[str]]:
    """Run what the codex adapter launches against the fake; feed the parser."""
    adapter = CodexAdapter()
    probe = adapter.probe({"binary": str(fake.bin_dir / "codex")})
    assert probe.available and probe.version == "codex-cli 0.171.0", probe.error
    request = LaunchRequest(
        prompt="please say hello", cwd=str(fake.work), env=fake.env, config={},
        resume_id=resume_id, run_id=5,
    )  # fmt: skip
    launch = adapter.launch(probe, request)
    parser = adapter.parser(request)
    done = subprocess.run(
        launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    for line in done.stdout.decode(errors="replace").splitlines():
        parser.feed(line)
    for line in done.stderr.decode(errors="replace").splitlines():
        parser.feed_stderr(line)
    return parser, done.returncode, launch.argv


def test_a_turn_prints_the_real_events_and_replies_through_pal(fake: Fake) -> None:
    parser, code, argv = launch_and_run(fake, None)
    assert code == 0
    assert fake.pal_calls() == [["cli", "send", DEFAULT_REPLY]]
    assert parser.terminal and parser.error is None
    assert parser.final_text == DEFAULT_REPLY
    assert parser.usage == {
        "input_tokens": 20,
        "cached_input_tokens": 0,
        "output_tokens": 10,
        "reasoning_output_tokens": 0,
        "scope": "thread",
    }
    thread = parser.session_id
    assert thread is not None
    [rollout] = fake.home.glob(f"sessions/*/*/*/rollout-*-{thread}.jsonl")
    year, month, day = rollout.parent.relative_to(fake.home / "sessions").parts
    assert rollout.name.startswith(f"rollout-{year}-{month}-{day}T")
    [record] = [json.loads(p.read_text()) for p in sorted(fake.records.glob("5-*.json"))]
    assert record["argv"] == argv[1:] and record["stdin"] == ""
    assert record["cwd"] == str(fake.work) and record["env"]["PAL_RUN_ID"] == "5"


def test_the_event_sequence_and_the_command_item(fake: Fake) -> None:
    done = fake.run("exec", "--json", "--skip-git-repo-check", "--yolo", "hi")
    assert done.returncode == 0, done.stderr
    found = events(done.stdout)
    assert kinds(done.stdout) == [
        "thread.started",
        "turn.started",
        "item.started",
        "item.completed",
        "item.completed",
        "turn.completed",
    ]
    started, completed = found[2]["item"], found[3]["item"]
    command = f"/bin/bash -c 'pal cli send \"{DEFAULT_REPLY}\"'"
    assert started == {
        "id": "item_0",
        "type": "command_execution",
        "command": command,
        "aggregated_output": "",
        "exit_code": None,
        "status": "in_progress",
    }
    assert completed == {
        **started,
        "aggregated_output": "sent\n",
        "exit_code": 0,
        "status": "completed",
    }
    assert found[4]["item"] == {"id": "item_1", "type": "agent_message", "text": DEFAULT_REPLY}
    assert b"Reading additional input from stdin..." in done.stderr


def test_a_resume_continues_the_same_thread_and_its_usage(fake: Fake) -> None:
    first, _, _ = launch_and_run(fake, None)
    [rollout] = fake.home.glob("sessions/*/*/*/*.jsonl")
    lines = len(rollout.read_text().splitlines())
    second, code, argv = launch_and_run(fake, first.session_id)
    assert code == 0 and second.session_id == first.session_id
    assert argv.index("--sandbox") < argv.index("resume")
    assert second.usage is not None and second.usage["input_tokens"] == 40
    assert list(fake.home.glob("sessions/*/*/*/*.jsonl")) == [rollout]
    assert len(rollout.read_text().splitlines()) > lines
    assert not second.resume_missed(code)


def test_a_resume_of_an_unknown_thread_fails_like_codex(fake: Fake) -> None:
    parser, code, _ = launch_and_run(fake, MISSING)
    assert code == 1 and parser.session_id is None
    assert parser.resume_missed(code)
    done = fake.run("exec", "--json", "--skip-git-repo-check", "resume", MISSING, "hi")
    assert (done.returncode, done.stdout) == (1, b"")
    assert RESUME_MISS_MESSAGE.format(thread_id=MISSING).encode() in done.stderr
    assert fake.pal_calls() == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["exec", "--bogus", "hi"], "error: unexpected argument '--bogus' found"),
        (["exec", "--json", "resume", "--sandbox", "read-only", MISSING, "hi"], "'--sandbox'"),
        (["exec", "--json", "resume", "-C", "/tmp", MISSING, "hi"], "'-C'"),
        (["exec", "--sandbox", "all", "hi"], "invalid value 'all' for '--sandbox"),
        (["exec", "--json", "--json", "hi"], "'--json' cannot be used multiple times"),
        (["exec", "-m"], "a value is required for '--model <MODEL>'"),
        (["exec", "hi", "there"], "unexpected argument 'there' found"),
    ],
)
def test_a_bad_command_line_is_a_usage_error(fake: Fake, args: list[str], said: str) -> None:
    done = fake.run(*args)
    assert done.returncode == 2 and done.stdout == b""
    assert said.encode() in done.stderr
    assert b"For more information, try '--help'." in done.stderr


def test_flags_in_every_form_codex_accepts(fake: Fake) -> None:
    done = fake.run(
        "exec", "-c", "a=1", "--config=b=2", "-mgpt-5.5", "--sandbox=danger-full-access",
        "--disable", "unbounded_connection_retries", "--skip-git-repo-check", "--json",
        "--", "-starts with a dash",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    thread = events(done.stdout)[0]["thread_id"]
    resumed = fake.run(
        "exec", "--json", "resume", "-c", "c=3", "-m", "x", "--skip-git-repo-check", "--json",
        thread, "--", "-again",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert events(resumed.stdout)[0]["thread_id"] == thread
    assert kinds(resumed.stdout)[-1] == "turn.completed"


def test_startup_checks_match_codex(fake: Fake, tmp_path: Path) -> None:
    done = fake.run("exec", "--json", "hi")
    assert done.returncode == 1 and NOT_TRUSTED.encode() in done.stderr and done.stdout == b""
    (fake.work / ".git").mkdir()
    (fake.work / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert fake.run("exec", "--json", "hi").returncode == 0
    gone = fake.run("exec", "--json", "hi", CODEX_HOME=str(tmp_path / "nope"))
    assert gone.returncode == 1
    assert b"Error finding codex home: CODEX_HOME points to" in gone.stderr
    bad = fake.run("exec", "--json", "-c", "nonsense", "hi")
    assert bad.returncode == 1 and b"Invalid override (missing '='): nonsense" in bad.stderr
    assert fake.run("--version").stdout == b"codex-cli 0.171.0\n"


def test_a_failing_reply_command_fails_its_item_but_not_the_turn(fake: Fake) -> None:
    done = fake.run("exec", "--json", "--skip-git-repo-check", "--yolo", "hi", PAL_STUB_EXIT="3")
    assert done.returncode == 0
    item = events(done.stdout)[3]["item"]
    assert (item["status"], item["exit_code"], item["aggregated_output"]) == ("failed", 3, "sent\n")
    assert kinds(done.stdout)[-1] == "turn.completed"


def test_without_network_in_the_sandbox_the_reply_cannot_reach_the_daemon(fake: Fake) -> None:
    done = fake.run("exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", "hi")
    item = events(done.stdout)[3]["item"]
    assert item["status"] == "failed" and "has no network" in item["aggregated_output"]
    assert fake.pal_calls() == []


def test_stdin_is_read_to_eof_before_any_work(fake: Fake) -> None:
    child = fake.start(
        "exec", "--json", "--skip-git-repo-check", "--yolo", "hi", stdin=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        ready, _, _ = select.select([child.stdout], [], [], 0.3)
        assert not ready, "the fake started its turn with stdin still open"
        out, _ = child.communicate(b"more context", timeout=TIMEOUT)
    finally:
        stop(child)
    assert kinds(out)[0] == "thread.started" and child.returncode == 0
    [record] = [json.loads(p.read_text()) for p in fake.records.glob("5-*.json")]
    assert record["stdin"] == "more context"


def scenario(fake: Fake, prompt: str) -> subprocess.CompletedProcess[bytes]:
    return fake.run("exec", "--json", "--skip-git-repo-check", "--yolo", prompt)


def test_exit_n_ends_the_turn_without_a_terminal_event(fake: Fake) -> None:
    done = scenario(fake, "[fake:no_reply] [fake:exit=4] broken")
    assert done.returncode == 4
    assert kinds(done.stdout) == ["thread.started", "turn.started", "item.completed"]
    assert fake.pal_calls() == []


def test_reply_text_comes_from_the_prompt(fake: Fake) -> None:
    assert scenario(fake, "[fake:reply=all good, boss] go").returncode == 0
    assert fake.pal_calls() == [["cli", "send", "all good, boss"]]


def test_floods_and_long_lines_are_exactly_the_size_asked(fake: Fake) -> None:
    done = scenario(
        fake, "[fake:no_reply] [fake:flood=123457] [fake:long_line=70000] [fake:stderr_flood=5000]"
    )
    assert done.returncode == 0
    lines = done.stdout.split(b"\n")
    assert b"L" * 70000 in lines
    flood = [line for line in lines if line and not line.startswith((b"{", b"L"))]
    assert sum(len(line) + 1 for line in flood) == 123457
    stderr = done.stderr.replace(b"Reading additional input from stdin...\n", b"")
    assert len(stderr) == 5000
    assert kinds(done.stdout)[-1] == "turn.completed"


def test_non_utf8_bytes_reach_both_streams(fake: Fake) -> None:
    done = scenario(fake, "[fake:non_utf8] [fake:no_reply]")
    assert b"\xff\xfe\xc3(" in done.stdout and b"\xff\xfe\xc3(" in done.stderr
    assert done.returncode == 0


@pytest.fixture
def grandchildren() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_grandchild_escapes_into_its_own_session_and_ignores_sigterm(
    fake: Fake, grandchildren: list[int]
) -> None:
    done = scenario(fake, "[fake:grandchild] [fake:no_reply]")
    [line] = [e for e in events(done.stdout) if "grandchild_pid" in e]
    pid = int(line["grandchild_pid"])
    grandchildren.append(pid)
    assert (fake.records / "grandchild-5.pid").read_text() == str(pid)
    assert os.getsid(pid) == pid  # a session of its own
    if sys.platform.startswith("linux"):

        def ignores_sigterm() -> bool:
            status = Path(f"/proc/{pid}/status").read_text()
            ignored = int(
                next(s for s in status.splitlines() if s.startswith("SigIgn:")).split()[1], 16
            )
            return bool(ignored & (1 << (signal.SIGTERM - 1)))

        wait_until(ignores_sigterm, timeout=10)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"PAL_RUN_ID=5" in environ


def stop(child: subprocess.Popen[bytes]) -> None:
    """Make sure a started fake is gone and its pipes closed."""
    if child.poll() is None:
        child.kill()
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()
    child.wait(timeout=TIMEOUT)


def wait_for_turn(child: subprocess.Popen[bytes]) -> None:
    """Read stdout until the fake has started its turn."""
    assert child.stdout is not None
    while True:
        line = child.stdout.readline()
        assert line, "the fake ended before its turn started"
        if b'"turn.started"' in line:
            return


def test_sigterm_kills_it_unless_the_scenario_ignores_it(fake: Fake) -> None:
    child = fake.start("exec", "--json", "--skip-git-repo-check", "[fake:sleep=30] slow")
    try:
        wait_for_turn(child)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=TIMEOUT) == -signal.SIGTERM
    finally:
        stop(child)
    stubborn = fake.start(
        "exec", "--json", "--skip-git-repo-check", "[fake:ignore_sigterm] [fake:sleep=30] slow"
    )
    try:
        wait_for_turn(stubborn)
        stubborn.send_signal(signal.SIGTERM)
        stubborn.send_signal(signal.SIGINT)  # handled after the ignored SIGTERM: exit 1
        assert stubborn.wait(timeout=TIMEOUT) == 1
    finally:
        stop(stubborn)


def test_sigint_ends_the_turn_with_exit_1_and_no_more_events(fake: Fake) -> None:
    child = fake.start("exec", "--json", "--skip-git-repo-check", "[fake:sleep=30] slow")
    try:
        wait_for_turn(child)
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=TIMEOUT)
    finally:
        stop(child)
    assert child.returncode == 1
    assert kinds(rest) == []
