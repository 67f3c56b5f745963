"""The command runtime (and neeko and coco, which run like it), and the registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pal.runtimes import RUNTIMES, LaunchError, LaunchRequest, Probe, get_adapter, probe_all
from pal.runtimes.command import CommandAdapter, CommandParser, KnownCommandAdapter


def executable(folder: Path, name: str, body: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def request(
    command: Any, *, path: Path, resume_id: str | None = None, prompt: str = "fix {cwd} it"
) -> LaunchRequest:
    return LaunchRequest(
        prompt=prompt,
        cwd=str(path),
        env={"PATH": str(path / "bin"), "PAL_RUN_ID": "12"},
        config={} if command is None else {"command": command},
        resume_id=resume_id,
        run_id=12,
    )


def test_the_template_is_filled_and_its_program_found_on_the_runs_path(tmp_path: Path) -> None:
    agent = executable(tmp_path / "bin", "my-agent")
    template = ["my-agent", "--cwd={cwd}", "--run", "{run_id}", "--resume={session_id}", "{prompt}"]
    launch = CommandAdapter().launch(Probe("command", True), request(template, path=tmp_path))
    assert launch.argv == [
        str(agent),
        f"--cwd={tmp_path}",
        "--run",
        "12",
        "--resume=",
        "fix {cwd} it",  # a placeholder inside a value stays as it is
    ]
    assert launch.cwd == str(tmp_path)
    assert launch.env == {"PATH": str(tmp_path / "bin"), "PAL_RUN_ID": "12"}
    assert launch.session_id is None
    resumed = CommandAdapter().launch(
        Probe("command", True), request(template, path=tmp_path, resume_id="s-1")
    )
    assert resumed.argv[4] == "--resume=s-1"


def test_a_program_given_as_a_path_is_relative_to_the_cwd(tmp_path: Path) -> None:
    script = executable(tmp_path / "scripts", "run.sh")
    launch = CommandAdapter().launch(
        Probe("command", True), request(["scripts/run.sh", "{prompt}"], path=tmp_path)
    )
    assert launch.argv == [str(script), "fix {cwd} it"]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (None, "a command agent needs config.command, the argv to run: set it with PATCH"),
        ([], "config.command must be a non-empty list of strings"),
        ("my-agent {prompt}", "config.command must be a non-empty list of strings"),
        (["my-agent", 3], "config.command must be a non-empty list of strings"),
        ([" "], "config.command must be a non-empty list of strings"),
        (["no-such-agent"], "'no-such-agent' (config.command[0]) was not found"),
    ],
)
def test_a_missing_or_bad_command_says_how_to_set_it(
    tmp_path: Path, command: Any, said: str
) -> None:
    with pytest.raises(LaunchError) as caught:
        CommandAdapter().launch(Probe("command", True), request(command, path=tmp_path))
    assert said in caught.value.message
    if "PATCH" in said:
        assert '{"config": {"command": [' in caught.value.message


def test_command_is_always_available() -> None:
    assert CommandAdapter().probe() == Probe("command", True)
    assert CommandAdapter().probe({"command": ["x"]}).report() == {
        "name": "command",
        "available": True,
    }


def test_the_parser_takes_a_session_id_line_and_ignores_the_rest() -> None:
    parser = CommandAdapter().parser(request(["x"], path=Path("/")))
    assert isinstance(parser, CommandParser)
    for line in ["hello", "{", '{"session_id": 5}', "[1]", '{"a":' * 50_000, "{" * 10_000]:
        parser.feed(line)
    assert parser.session_id is None
    parser.feed('{"session_id": "s-42", "other": true}')
    parser.feed("done")
    assert parser.session_id == "s-42"
    assert not parser.terminal and parser.usage is None and not parser.resume_missed(1)


@pytest.mark.parametrize("name", ["neeko", "coco"])
def test_known_names_are_probed_and_say_what_to_install(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    probe = get_adapter(name).probe()
    assert probe == Probe(
        name,
        False,
        error=f"{name} is not installed on this computer: put the `{name}` binary on PATH "
        "(or set the agent's config.binary to its path)",
    )
    binary = executable(tmp_path / "bin", name, f'echo "{name} 1.2.3"')
    assert get_adapter(name).probe() == Probe(name, True, version=f"{name} 1.2.3", path=str(binary))


def test_known_names_need_a_command_to_run(tmp_path: Path) -> None:
    neeko = KnownCommandAdapter("neeko")
    probe = Probe("neeko", True, path="/usr/bin/neeko")
    with pytest.raises(LaunchError) as caught:
        neeko.launch(probe, request(None, path=tmp_path))
    assert "pal has no built-in adapter for neeko" in caught.value.message
    assert "config.command" in caught.value.message
    executable(tmp_path / "bin", "neeko")
    launch = neeko.launch(probe, request(["neeko", "run", "{prompt}"], path=tmp_path))
    assert launch.argv == [str(tmp_path / "bin" / "neeko"), "run", "fix {cwd} it"]


def test_the_registry_knows_every_runtime_and_refuses_others() -> None:
    assert RUNTIMES == ("codex", "claude", "command", "neeko", "coco")
    assert [get_adapter(name).name for name in RUNTIMES] == list(RUNTIMES)
    with pytest.raises(LaunchError) as caught:
        get_adapter("gemini")
    assert caught.value.message.startswith("unknown runtime 'gemini': pal runs codex, claude")


def test_probe_all_probes_each_default_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(tmp_path, "codex", 'echo "codex-cli 0.171.0"')
    monkeypatch.setenv("PATH", str(tmp_path))
    probes = probe_all()
    assert [p.name for p in probes] == list(RUNTIMES)
    assert [p.available for p in probes] == [True, False, True, False, False]
    assert probes[0].version == "codex-cli 0.171.0"


def test_the_runtimes_package_imports_no_server_code() -> None:
    code = (
        "import sys, pal.runtimes, pal.runtimes.registry; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'fastapi', 'pydantic') or m.startswith(('pal.server', 'pal.store'))]; "
        "print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
