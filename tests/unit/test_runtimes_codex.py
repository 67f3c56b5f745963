"""The codex adapter: argv, config, environment, the JSONL parser, and the probe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pal.runtimes.base import LaunchError, LaunchRequest, Probe
from pal.runtimes.codex import RESUME_MISS_PATTERN, CodexAdapter, CodexParser
from tests.fakes.codex import RESUME_MISS_MESSAGE

BIN = "/opt/codex/bin/codex"
PROBE = Probe("codex", True, version="codex-cli 0.171.0", path=BIN)
THREAD = "01a21fd7-6d27-76d3-9b76-a532ab2e671e"
# What codex-cli 0.171.0 printed for one turn (a command that failed, then the answer).
REAL_TURN = [
    '{"type":"thread.started","thread_id":"01a21fd7-6d27-76d3-9b76-a532ab2e671e"}',
    '{"type":"turn.started"}',
    '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":'
    '"/bin/bash -c \'pal cli send \\"hello\\"\'","aggregated_output":"","exit_code":null,'
    '"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_0","type":"command_execution","command":'
    '"/bin/bash -c \'pal cli send \\"hello\\"\'","aggregated_output":"/bin/bash: line 1: pal: '
    'command not found\\n","exit_code":127,"status":"failed"}}',
    '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"FIN"}}',
    '{"type":"turn.completed","usage":{"input_tokens":40,"cached_input_tokens":0,'
    '"cache_write_input_tokens":0,"output_tokens":20,"reasoning_output_tokens":0}}',
]
WORKSPACE_WRITE = [
    "--sandbox",
    "workspace-write",
    "-c",
    "sandbox_workspace_write.network_access=true",
]


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
        env={"PATH": "/usr/bin", "PAL_RUN_ID": "9"} if env is None else env,
        config=config or {},
        resume_id=resume_id,
        run_id=9,
    )


def test_a_new_thread_runs_exec_json_in_the_workspace_write_sandbox() -> None:
    launch = CodexAdapter().launch(PROBE, request())
    assert launch.argv == [
        BIN,
        "exec",
        "--json",
        "--skip-git-repo-check",
        *WORKSPACE_WRITE,
        "do it",
    ]
    assert launch.cwd == "/work/here"
    assert launch.env == {"PATH": "/usr/bin", "PAL_RUN_ID": "9"}
    assert launch.session_id is None  # codex names the thread in thread.started


def test_a_resume_puts_every_exec_flag_before_resume() -> None:
    config = {"model": "gpt-5.5", "args": ["--disable", "unbounded_connection_retries"]}
    launch = CodexAdapter().launch(PROBE, request(config, resume_id=THREAD))
    flags = ["exec", "--json", "--skip-git-repo-check", *WORKSPACE_WRITE, "-m", "gpt-5.5"]
    extra = ["--disable", "unbounded_connection_retries"]
    assert launch.argv == [BIN, *flags, *extra, "resume", THREAD, "do it"]


@pytest.mark.parametrize(
    ("sandbox", "flags"),
    [
        ("workspace-write", WORKSPACE_WRITE),
        ("danger-full-access", ["--sandbox", "danger-full-access"]),
        ("bypass", ["--dangerously-bypass-approvals-and-sandbox"]),
        ("read-only", ["--sandbox", "read-only"]),
    ],
)
def test_config_sandbox_picks_the_flags(sandbox: str, flags: list[str]) -> None:
    argv = CodexAdapter().launch(PROBE, request({"sandbox": sandbox})).argv
    assert argv[4:-1] == flags


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"sandbox": "yolo"}, "config.sandbox 'yolo' is not a codex sandbox: use one of"),
        ({"sandbox": ["read-only"]}, "is not a codex sandbox"),
        ({"model": ""}, "config.model must be a non-empty string"),
        ({"args": "--json"}, "config.args must be a list of strings"),
        ({"args": ["-m", 5]}, "config.args must be a list of strings"),
        ({"codex_home": "relative/home"}, "config.codex_home must be an absolute path"),
    ],
)
def test_a_bad_config_is_a_launch_error_that_says_what_to_fix(
    config: dict[str, Any], said: str
) -> None:
    with pytest.raises(LaunchError) as caught:
        CodexAdapter().launch(PROBE, request(config))
    assert said in caught.value.message


def test_config_codex_home_sets_codex_home_with_the_tilde_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "codex-home").mkdir()
    env = {"PATH": "/usr/bin", "CODEX_HOME": "/somewhere/else"}
    launch = CodexAdapter().launch(PROBE, request({"codex_home": "~/codex-home"}, env=env))
    assert launch.env["CODEX_HOME"] == str(tmp_path / "codex-home")


def test_an_inherited_codex_home_is_kept_and_must_exist(tmp_path: Path) -> None:
    env = {"CODEX_HOME": str(tmp_path)}
    assert CodexAdapter().launch(PROBE, request(env=env)).env == env
    missing = str(tmp_path / "gone")
    with pytest.raises(LaunchError) as caught:
        CodexAdapter().launch(PROBE, request(env={"CODEX_HOME": missing}))
    assert f"CODEX_HOME is {missing}, which does not exist" in caught.value.message
    assert f"CODEX_HOME={missing} codex login" in caught.value.message
    with pytest.raises(LaunchError, match="config.codex_home is"):
        CodexAdapter().launch(PROBE, request({"codex_home": missing}))


def test_a_prompt_that_looks_like_a_flag_comes_after_a_double_dash() -> None:
    argv = CodexAdapter().launch(PROBE, request(prompt="-x marks the spot")).argv
    assert argv[-2:] == ["--", "-x marks the spot"]
    resumed = CodexAdapter().launch(PROBE, request(prompt="-", resume_id=THREAD)).argv
    assert resumed[-4:] == ["resume", THREAD, "--", "-"]


def test_an_unavailable_runtime_cannot_launch() -> None:
    missing = Probe("codex", False, error="codex is not installed on this computer: ...")
    with pytest.raises(LaunchError, match="codex is not installed"):
        CodexAdapter().launch(missing, request())


# -- parser -----------------------------------------------------------------------------------


def parsed(lines: list[str], *, resume_id: str | None = None) -> CodexParser:
    parser = CodexAdapter().parser(request(resume_id=resume_id))
    for line in lines:
        parser.feed(line)
    return parser


def test_the_parser_reads_a_real_turn() -> None:
    parser = parsed(REAL_TURN)
    assert parser.session_id == THREAD
    assert parser.final_text == "FIN"
    assert parser.terminal and parser.error is None
    assert parser.usage == {
        "input_tokens": 40,
        "cached_input_tokens": 0,
        "output_tokens": 20,
        "reasoning_output_tokens": 0,
        "scope": "thread",
    }


def test_the_parser_keeps_the_turns_failure() -> None:
    parser = parsed(
        [
            REAL_TURN[0],
            REAL_TURN[1],
            '{"type":"error","message":"We\'re currently experiencing high demand"}',
            '{"type":"turn.failed","error":{"message":"stream disconnected before completion"}}',
        ]
    )
    assert parser.terminal
    assert parser.error == "stream disconnected before completion"
    assert parser.usage is None and parser.final_text is None


def test_retry_notices_are_not_an_error_once_the_turn_completes() -> None:
    notice = '{"type":"error","message":"Reconnecting... 2/5 (stream disconnected)"}'
    assert parsed([REAL_TURN[0], notice]).error == "Reconnecting... 2/5 (stream disconnected)"
    assert parsed([REAL_TURN[0], notice, *REAL_TURN[1:]]).error is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "not json at all",
        "WARNING: proceeding, even though we could not create PATH aliases",
        "{",
        "[1, 2, 3]",
        '"thread.started"',
        "{" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"type":"thread.started","thread_id":5}',
        '{"type":"item.completed","item":"agent_message"}',
        '{"type":"item.completed","item":{"type":"agent_message","text":["x"]}}',
        '{"type":"turn.completed","usage":{"input_tokens":"many","output_tokens":true}}',
        '{"type":"turn.completed","usage":[1]}',
        '{"type":"turn.failed","error":"boom"}',
        '{"type":"error","message":null}',
        '{"type":"thread.started","thread_id":"' + "x" * 5_000_000 + '"}',
        "\ufffd\ufffd invalid utf-8 replaced",
    ],
)
def test_the_parser_never_raises(line: str) -> None:
    parser = CodexAdapter().parser(request())
    parser.feed(line)
    parser.feed_stderr(line)
    assert parser.usage is None and parser.final_text is None


def test_stderr_keeps_a_bounded_tail() -> None:
    parser = CodexAdapter().parser(request())
    for n in range(1000):
        parser.feed_stderr(f"line {n} " + "x" * 10_000)
    assert len(parser.stderr_tail) == 200
    assert parser.stderr_tail[-1].startswith("line 999 ")
    assert max(len(line) for line in parser.stderr_tail) <= 2000


MISS = RESUME_MISS_MESSAGE.format(thread_id=THREAD)


def test_a_resume_of_a_thread_codex_does_not_have_is_a_miss() -> None:
    assert RESUME_MISS_PATTERN.search(
        "Error: thread/resume: thread/resume failed: no rollout found for thread id "
        f"{THREAD} (code -32600)"
    )
    parser = parsed([], resume_id=THREAD)
    parser.feed_stderr("WARNING: proceeding, even though we could not create PATH aliases")
    parser.feed_stderr(MISS)
    parser.feed_stderr("Stack backtrace:")
    assert parser.resume_missed(1)
    assert parser.session_id is None


def test_other_failures_are_not_a_resume_miss() -> None:
    fresh = parsed([])
    fresh.feed_stderr(MISS)
    assert not fresh.resume_missed(1)  # not a resume
    started = parsed([REAL_TURN[0]], resume_id=THREAD)
    started.feed_stderr(MISS)
    assert not started.resume_missed(1)  # the thread was found
    other = parsed([], resume_id=THREAD)
    other.feed_stderr(
        'thread/resume failed: This chat uses model provider "fake", which is no longer configured'
    )
    assert not other.resume_missed(1)
    killed = parsed([], resume_id=THREAD)
    killed.feed_stderr(MISS)
    assert not killed.resume_missed(None) and not killed.resume_missed(0)


# -- probe ------------------------------------------------------------------------------------


def stub(folder: Path, name: str, body: str) -> Path:
    """An executable shell script."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_probe_finds_the_binary_on_path_and_reads_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codex = stub(tmp_path / "bin", "codex", 'echo "codex-cli 0.171.0"')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    probe = CodexAdapter().probe()
    assert probe == Probe("codex", True, version="codex-cli 0.171.0", path=str(codex))
    assert probe.report() == {
        "name": "codex",
        "available": True,
        "version": "codex-cli 0.171.0",
        "path": str(codex),
    }


def test_probe_says_what_to_install_when_codex_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = CodexAdapter().probe({})
    assert not probe.available and probe.path is None
    assert probe.error == (
        "codex is not installed on this computer: install it with `npm install -g "
        "@openai/codex` (or set the agent's config.binary to its path)"
    )
    assert probe.report() == {"name": "codex", "available": False, "error": probe.error}
    given = CodexAdapter().probe({"binary": str(tmp_path / "nope")})
    assert not given.available and "(the agent's config.binary) was not found" in str(given.error)
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    given = CodexAdapter().probe({"binary": str(plain)})
    assert not given.available and "is not executable" in str(given.error)


def test_probe_uses_config_binary_with_the_tilde_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "")
    codex = stub(tmp_path / "tools", "my-codex", 'echo "codex-cli 0.171.0"')
    probe = CodexAdapter().probe({"binary": "~/tools/my-codex"})
    assert probe.available and probe.path == str(codex)


def test_a_broken_install_is_unavailable_with_the_vendors_fix(tmp_path: Path) -> None:
    broken = stub(
        tmp_path,
        "codex",
        "echo 'Error: Missing optional dependency @openai/codex-linux-x64. Reinstall Codex: "
        "npm install -g @openai/codex@latest' >&2; exit 1",
    )
    probe = CodexAdapter().probe({"binary": str(broken)})
    assert not probe.available and probe.path == str(broken)
    assert "installed but broken (Error: Missing optional dependency" in str(probe.error)
    assert "reinstall it with `npm install -g @openai/codex@latest`" in str(probe.error)


def test_a_version_that_fails_otherwise_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    odd = stub(tmp_path, "codex", "echo 'segfault, sorry' >&2; exit 3")
    probe = CodexAdapter().probe({"binary": str(odd)})
    assert not probe.available
    assert "`--version` exited with code 3 (segfault, sorry)" in str(probe.error)


def test_a_hanging_binary_times_out_quickly(tmp_path: Path) -> None:
    hanging = stub(tmp_path, "codex", "exec sleep 30")
    started = time.monotonic()
    probe = CodexAdapter(probe_timeout=0.3).probe({"binary": str(hanging)})
    assert time.monotonic() - started < 1.5
    assert not probe.available
    assert "did not answer within 0.3 s" in str(probe.error)


def test_probe_report_fits_the_servers_limits() -> None:
    probe = Probe("codex", False, version="v" * 500, error="e" * 5000)
    report = probe.report()
    assert len(report["version"]) == 200 and len(report["error"]) == 2000
    json.dumps(report)
