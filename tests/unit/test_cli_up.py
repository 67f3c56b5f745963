"""The pieces of ``pal up`` and the run table that need no processes: URLs, the saved
computer file, durations."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from pal.cli import computer_file
from pal.cli.children import Child, Events
from pal.cli.computer_file import SavedComputer, ensure_computer, load_computer, save_computer
from pal.cli.console.runs import duration
from pal.cli.up import _daemon_ready, local_url, stopped_status
from pal.client import Run
from pal.config import load_settings
from pal.store.tables import utcnow
from tests.conftest import wait_until


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 4127, "http://127.0.0.1:4127"),
        ("0.0.0.0", 4127, "http://127.0.0.1:4127"),
        ("::", 9000, "http://[::1]:9000"),
        ("fe80::1", 9000, "http://[fe80::1]:9000"),
        ("pal.example", 80, "http://pal.example:80"),
    ],
)
def test_local_url_reaches_wildcard_binds_on_loopback(host: str, port: int, url: str) -> None:
    assert local_url(host, port) == url


def test_saved_computer_is_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "computer.json"
    first = SavedComputer(id="machine_1", api_key="sk_machine_a", server_url="http://x:1")
    save_computer(path, first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_computer(path) == first
    path.chmod(0o644)
    second = SavedComputer(id="machine_2", api_key="sk_machine_b", server_url="http://x:1")
    save_computer(path, second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == second
    assert [p.name for p in tmp_path.iterdir()] == ["computer.json"]  # no temporary left


@pytest.mark.parametrize(
    "content", [None, "", "not json", "[]", '{"id": "machine_1"}', '{"id": "", "api_key": "k"}']
)
def test_a_missing_or_broken_computer_file_means_none_saved(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "computer.json"
    if content is not None:
        path.write_text(content)
    assert load_computer(path) is None


def test_a_computer_path_that_is_a_folder_is_refused_before_provisioning(tmp_path: Path) -> None:
    (tmp_path / "computer.json").mkdir()
    # No server at this URL: provisioning would fail differently (unreachable) if reached.
    with pytest.raises(IsADirectoryError, match="is not a file"):
        ensure_computer(tmp_path, "http://127.0.0.1:9")


def test_a_malformed_computer_file_is_replaced_and_the_note_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeClient:
        def __init__(self, url: str, token: str | None = None) -> None:
            # nothing usable was saved, so no API key is tried: only the admin token (none
            # in this home) is sent, to provision
            assert token is None

        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def provision_computer(self, name: str, server_url: str) -> dict[str, Any]:
            return {"computer": {"id": "machine_new"}, "api_key": "sk_machine_new"}

    monkeypatch.setattr(computer_file, "ServerClient", FakeClient)
    path = tmp_path / "computer.json"
    path.write_text("{not json")
    computer, note = ensure_computer(tmp_path, "http://server.test")
    assert computer["id"] == "machine_new"
    assert "was unreadable or malformed" in note and "computers revoke" in note
    assert load_computer(path) == computer


def _run(**fields: Any) -> Run:
    return cast(Run, {"status": "completed", "finished_at": None, **fields})


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59, "59s"), (60, "1m00s"), (185, "3m05s"), (7500, "2h05m")]
)
def test_duration_of_a_finished_run(seconds: int, shown: str) -> None:
    run = _run(started_at="2026-01-01T00:00:00+00:00")
    run["finished_at"] = (
        f"2026-01-01T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}+00:00"
    )
    assert duration(run, now=utcnow()) == shown


def test_duration_of_a_running_run_counts_to_now() -> None:
    now = utcnow()
    run = _run(status="running", started_at=now.replace(microsecond=0).isoformat())
    assert duration(run, now=now) == "0s"
    assert duration(_run(status="lost", started_at=now.isoformat()), now=now) == ""


def test_daemon_readiness_with_an_unreadable_token_file_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "daemon.token").write_bytes(b"\xff\xfe")  # the daemon exits and says why
    settings = load_settings({"PAL_HOME": str(tmp_path)})
    assert _daemon_ready(settings, "http://127.0.0.1:1", "machine_1") is False


INTERRUPTIBLE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit({code}))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize(("code", "clean"), [(130, True), (0, True), (3, False)])
def test_a_child_stopped_by_ctrl_c_may_exit_130(
    code: int, clean: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python programs interrupted while starting exit 128 + SIGINT: `pal up` counts that
    as a clean stop; any other status is reported."""
    events = Events()
    argv = [sys.executable, "-c", INTERRUPTIBLE.format(code=code)]
    child = Child.start("server", argv, dict(os.environ), events)
    wait_until(lambda: "ready" in child._lines, timeout=20)
    child.stop(signal.SIGINT, 20, events)
    child.tail()  # waits for the output pump to finish
    assert child.proc.stdout is not None
    child.proc.stdout.close()
    assert child.stopped_cleanly() is clean
    assert stopped_status([child]) == (0 if clean else 1)
    expected = "" if clean else f"error: the pal server exited with status {code}\n"
    assert capsys.readouterr().err == expected
