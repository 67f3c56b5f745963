"""The claude adapter: argv, config, environment, the stream-json parser, and the probe; and
the adapter's argv against the fake claude (tests/fakes/claude.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pal.runtimes.base import LaunchError, LaunchRequest, Probe
from pal.runtimes.claude import ClaudeAdapter, ClaudeParser
from tests.fakes import install_fakes

BIN = "/opt/claude/bin/claude"
PROBE = Probe("claude", True, version="2.1.332 (Claude Code)", path=BIN)
NEW_ID = "7d3c3f55-2d0e-4a5e-9d55-0b1b2c3d4e5f"
OLD_ID = "35814092-99b2-4a66-99e1-1dc2cbd7fc10"
STREAM = ["--output-format", "stream-json", "--verbose"]
PERMS = ["--permission-mode", "acceptEdits", "--allowedTools", "Bash(pal:*)"]
# Shapes of claude 2.1.x stream-json (../shared/reference/runtimes.md §2).
INIT = (
    '{"type":"system","subtype":"init","cwd":"/work","session_id":"' + NEW_ID + '",'
    '"model":"claude-sonnet-4-5","tools":["Bash"],"permissionMode":"acceptEdits",'
    '"apiKeySource":"none","claude_code_version":"2.1.332"}'
)
ASSISTANT = (
    '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text",'
    '"text":"working on it"}]},"session_id":"' + NEW_ID + '","parent_tool_use_id":null}'
)
RESULT = (
    '{"type":"result","subtype":"success","is_error":false,"result":"all done",'
    '"session_id":"' + NEW_ID + '","num_turns":3,"duration_ms":2100,"total_cost_usd":0.0312,'
    '"usage":{"input_tokens":1200,"cache_creation_input_tokens":10,'
    '"cache_read_input_tokens":800,"output_tokens":340},"permission_denials":[],'
    '"terminal_reason":"completed"}'
)
MISS = f"No conversation found with session ID: {OLD_ID}"
MISS_RESULT = (
    '{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":0,'
    '"session_id":"' + OLD_ID + '","total_cost_usd":0,"errors":["' + MISS + '"]}'
)


def adapter(*, root: bool = False) -> ClaudeAdapter:
    return ClaudeAdapter(is_root=lambda: root, new_session_id=lambda: NEW_ID)


def request(
    config: dict[str, Any] | None = None,
    *,
    resume_id: str | None = None,
    prompt: str = "do it",
    env: dict[str, str] | None = None,
) -> LaunchRequest:
    return LaunchRequest(
        prompt=prompt,
        cwd="/work/here",
        env={"PATH": "/usr/bin"} if env is None else env,
        config=config or {},
        resume_id=resume_id,
        run_id=3,
    )


def test_a_new_session_gets_its_id_before_it_starts() -> None:
    launch = adapter().launch(PROBE, request())
    assert launch.argv == [BIN, "-p", "do it", *STREAM, "--session-id", NEW_ID, *PERMS]
    assert launch.session_id == NEW_ID
    assert launch.cwd == "/work/here"


def test_a_resume_uses_resume_instead_of_session_id() -> None:
    config = {"model": "opus", "args": ["--max-turns", "5"]}
    launch = adapter().launch(PROBE, request(config, resume_id=OLD_ID))
    extra = ["--model", "opus", "--max-turns", "5"]
    assert launch.argv == [BIN, "-p", "do it", *STREAM, "--resume", OLD_ID, *PERMS, *extra]
    assert "--session-id" not in launch.argv
    assert launch.session_id == OLD_ID


def test_the_default_session_id_is_a_fresh_uuid() -> None:
    first = ClaudeAdapter().launch(PROBE, request()).session_id
    second = ClaudeAdapter().launch(PROBE, request()).session_id
    assert first and second and first != second and len(first) == 36


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"permission_mode": "yolo"}, "config.permission_mode 'yolo' is not a claude permission"),
        ({"permission_mode": None}, "is not a claude permission mode"),
        ({"model": 3}, "config.model must be a non-empty string"),
        ({"args": [None]}, "config.args must be a list of strings"),
        ({"claude_config_dir": "rel"}, "config.claude_config_dir must be an absolute path"),
    ],
)
def test_a_bad_config_is_a_launch_error(config: dict[str, Any], said: str) -> None:
    with pytest.raises(LaunchError) as caught:
        adapter().launch(PROBE, request(config))
    assert said in caught.value.message


def test_the_environment_drops_claudecode_and_sets_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"PATH": "/usr/bin", "CLAUDECODE": "1", "IS_SANDBOX": "1", "KEEP": "me"}
    launch = adapter().launch(PROBE, request({"claude_config_dir": "~/claude"}, env=env))
    assert launch.env == {
        "PATH": "/usr/bin",
        "KEEP": "me",
        "CLAUDE_CONFIG_DIR": f"{tmp_path}/claude",
    }


@pytest.mark.parametrize(
    ("root", "config", "sandbox"),
    [
        (True, {"permission_mode": "bypassPermissions"}, True),
        (True, {"args": ["--dangerously-skip-permissions"]}, True),
        (False, {"permission_mode": "bypassPermissions"}, False),
        (True, {"permission_mode": "acceptEdits"}, False),
        (True, {}, False),
    ],
)
def test_is_sandbox_only_for_root_bypassing_permissions(
    root: bool, config: dict[str, Any], sandbox: bool
) -> None:
    env = adapter(root=root).launch(PROBE, request(config)).env
    assert ("IS_SANDBOX" in env) is sandbox
    if sandbox:
        assert env["IS_SANDBOX"] == "1"


def test_a_prompt_that_looks_like_a_flag_goes_last_after_a_double_dash() -> None:
    argv = adapter().launch(PROBE, request(prompt="--help me")).argv
    assert argv[:2] == [BIN, "-p"] and argv[-2:] == ["--", "--help me"]


# -- parser -----------------------------------------------------------------------------------


def parsed(lines: list[str], *, resume_id: str | None = None) -> ClaudeParser:
    parser = adapter().parser(request(resume_id=resume_id))
    for line in lines:
        parser.feed(line)
    return parser


def test_the_parser_reads_init_assistant_and_result() -> None:
    parser = parsed([INIT])
    assert parser.session_id == NEW_ID and not parser.terminal
    parser.feed(ASSISTANT)
    assert parser.final_text == "working on it"
    parser.feed(RESULT)
    assert parser.terminal and parser.error is None
    assert parser.final_text == "all done"
    assert parser.usage == {
        "input_tokens": 1200,
        "cached_input_tokens": 800,
        "output_tokens": 340,
        "cost_usd": 0.0312,
        "scope": "run",
    }


def test_the_result_session_id_is_the_one_kept() -> None:
    other = "0f0f0f0f-0000-4000-8000-000000000000"
    parser = parsed([INIT, RESULT.replace(NEW_ID, other)])
    assert parser.session_id == other


def test_an_error_result_is_the_runs_error_even_with_exit_0() -> None:
    line = (
        '{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 '
        'overloaded","session_id":"' + NEW_ID + '","total_cost_usd":0}'
    )
    parser = parsed([INIT, line])
    assert parser.terminal and parser.error == "API Error: 529 overloaded"
    assert parser.usage == {"cost_usd": 0.0, "scope": "run"}
    bare = parsed(['{"type":"result","subtype":"error_max_turns","is_error":true}'])
    assert bare.error == "claude reported an error (error_max_turns)"


def test_a_resume_of_a_missing_conversation_is_a_miss() -> None:
    parser = parsed([MISS_RESULT], resume_id=OLD_ID)
    assert parser.error == MISS and parser.resume_missed(1)
    from_stderr = parsed([], resume_id=OLD_ID)
    from_stderr.feed_stderr(MISS)
    assert from_stderr.resume_missed(1)
    assert not parsed([MISS_RESULT]).resume_missed(1)  # not a resume
    talking = parsed([ASSISTANT.replace("working on it", MISS), RESULT], resume_id=OLD_ID)
    assert not talking.resume_missed(0)  # the agent saying it is not a miss


@pytest.mark.parametrize(
    "line",
    [
        "",
        "plain text",
        "{",
        "[]",
        "{" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"type":"system","subtype":"init","session_id":7}',
        '{"type":"assistant","message":"hi"}',
        '{"type":"assistant","message":{"content":[1,{"type":"text"},{"type":"text","text":2}]}}',
        '{"type":"result","usage":"lots","total_cost_usd":"free","result":5}',
        '{"type":"result","usage":{"input_tokens":true},"is_error":true,"errors":"x"}',
        '{"type":"result","result":"' + "r" * 5_000_000 + '"}',
    ],
)
def test_the_parser_never_raises(line: str) -> None:
    parser = adapter().parser(request())
    parser.feed(line)
    parser.feed_stderr(line)


# -- probe ------------------------------------------------------------------------------------


def stub(folder: Path, body: str) -> Path:
    path = folder / "claude"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_probe_reads_the_version(tmp_path: Path) -> None:
    claude = stub(tmp_path, 'echo "2.1.332 (Claude Code)"')
    probe = adapter().probe({"binary": str(claude)})
    assert probe == Probe("claude", True, version="2.1.332 (Claude Code)", path=str(claude))


def test_probe_of_the_npm_stub_without_its_native_binary(tmp_path: Path) -> None:
    claude = stub(tmp_path, 'echo "Error: claude native binary not installed." >&2; exit 1')
    probe = adapter().probe({"binary": str(claude)})
    assert not probe.available
    assert "reinstall it with `npm install -g @anthropic-ai/claude-code`" in str(probe.error)


def test_probe_says_what_to_install_when_claude_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = adapter().probe()
    assert not probe.available
    assert str(probe.error).startswith(
        "claude is not installed on this computer: install it with "
        "`npm install -g @anthropic-ai/claude-code`"
    )


# -- the adapter's argv against the fake claude ------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    """The run environment: the fake claude and a stub ``pal`` on PATH."""
    bin_dir = install_fakes(tmp_path / "bin")
    pal = bin_dir / "pal"
    pal.write_text('#!/bin/sh\necho "sent: $3"\n')
    pal.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "PAL_RUN_ID": "3",
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude-home"),
        "CLAUDECODE": "1",
    }


def run(launch_request: LaunchRequest, *, root: bool = False) -> tuple[ClaudeParser, int]:
    claude = ClaudeAdapter(is_root=lambda: root)
    probe = claude.probe(
        {"binary": str(Path(launch_request.env["PATH"].split(os.pathsep)[0]) / "claude")}
    )
    assert probe.available, probe.error
    launch = claude.launch(probe, launch_request)
    parser = claude.parser(launch_request)
    done = subprocess.run(
        launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        parser.feed(line)
    for line in done.stderr.splitlines():
        parser.feed_stderr(line)
    return parser, done.returncode


def test_the_fake_claude_accepts_the_adapters_argv_and_resumes(
    fake: dict[str, str], tmp_path: Path
) -> None:
    def ask(resume_id: str | None) -> LaunchRequest:
        return LaunchRequest(
            prompt="hello", cwd=str(tmp_path), env=fake, config={}, resume_id=resume_id,
            run_id=3,
        )  # fmt: skip

    parser, code = run(ask(None))
    assert code == 0 and parser.terminal and parser.error is None
    assert parser.final_text == "fake claude: done (run 3)"
    assert parser.usage is not None and parser.usage["scope"] == "run"
    session = parser.session_id
    assert session is not None
    folder = tmp_path / "claude-home" / "projects"
    assert [p.name for p in folder.glob("*/*.jsonl")] == [f"{session}.jsonl"]

    parser, code = run(ask(session))
    assert code == 0 and parser.session_id == session and not parser.resume_missed(code)

    parser, code = run(ask(OLD_ID))
    assert code == 1 and parser.resume_missed(code)
    assert parser.error == MISS


def test_the_fake_claude_refuses_bypass_as_root_without_is_sandbox(
    fake: dict[str, str], tmp_path: Path
) -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the root guard only applies to root")
    config = {"permission_mode": "bypassPermissions"}
    ask = LaunchRequest("hi", str(tmp_path), fake, config, None, 3)
    assert run(ask, root=True)[1] == 0  # the adapter sets IS_SANDBOX=1
    assert run(ask, root=False)[1] == 1  # without it claude refuses
