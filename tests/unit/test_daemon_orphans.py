"""Run records: a new daemon kills what the runs of a dead daemon left running, and leaves
the runs of a daemon still alive alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pal.daemon.orphans import RunRecords

SLEEPER = "import time; time.sleep(60)"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PAL_RUN_ID": "4", "PAL_RUN_AUTH": "run_x"}
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], env=env, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_runs_of_a_dead_daemon_are_killed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    records = RunRecords(tmp_path)
    records.add(4, sleeper.pid, {"PAL_RUN_ID": "4", "PAL_RUN_AUTH": "run_x"})
    [path] = (tmp_path / "runs").glob("*.json")
    assert path.stat().st_mode & 0o777 == 0o600
    record = json.loads(path.read_text())
    record["daemon_pid"] = dead_pid()  # as if written by a daemon that died
    path.write_text(json.dumps(record))

    assert RunRecords(tmp_path).reap_orphans(grace=1) == 1
    assert sleeper.wait(timeout=5) is not None
    assert not list((tmp_path / "runs").glob("*.json"))


def test_the_runs_of_a_live_daemon_are_left_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    RunRecords(tmp_path).add(4, sleeper.pid, {"PAL_RUN_ID": "4", "PAL_RUN_AUTH": "run_x"})
    assert RunRecords(tmp_path).reap_orphans(grace=1) == 0  # this process is that daemon
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE
    assert sleeper.poll() is None


def test_a_removed_or_unreadable_record_kills_nothing(tmp_path: Path) -> None:
    records = RunRecords(tmp_path)
    records.add(5, os.getpid(), {"PAL_RUN_ID": "5", "PAL_RUN_AUTH": "run_y"})
    records.remove(5)
    (tmp_path / "runs" / "1-9.json").write_text("{not json")
    assert records.reap_orphans(grace=1) == 0
    assert not list((tmp_path / "runs").glob("*.json"))
