"""proctree: process records, the marker search, and the per-OS spawn options and kill
commands (Windows by what it would run, since it cannot run here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from pal.daemon import proctree, supervisor
from pal.daemon.proctree import (
    PosixTree,
    Proc,
    WindowsTree,
    descendants,
    marked,
    process_tree,
    taskkill_argv,
)
from pal.daemon.supervisor import CannotSpawn, spawn

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Sleeping processes a test starts (with the env it wants); killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def sleeper(started: list[subprocess.Popen[bytes]], **env: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(SLEEPER, env={**os.environ, **env})
    started.append(process)
    return process


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Recorder:
    """Stands in for running taskkill."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str]) -> object:
        self.argvs.append(argv)
        return None


# -- records --------------------------------------------------------------------------------


@posix_only
def test_a_record_is_alive_only_while_its_process_runs(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    process = sleeper(sleepers)
    proc = Proc.of(psutil.Process(process.pid))
    assert proc is not None and proc.alive()
    assert not Proc(proc.pid, proc.create_time - 100).alive()  # the pid, reused by another
    process.kill()
    wait_until(lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE)
    assert not proc.alive()  # a zombie counts as gone
    process.wait()
    assert not proc.alive()
    proc.send(signal.SIGTERM)  # gone: nothing happens, nothing raises
    proc.kill()


@posix_only
def test_a_record_never_signals_a_reused_pid(sleepers: list[subprocess.Popen[bytes]]) -> None:
    process = sleeper(sleepers)
    created = psutil.Process(process.pid).create_time()
    Proc(process.pid, created - 100).kill()
    Proc(process.pid, created - 100).send(signal.SIGTERM)
    assert process.poll() is None
    Proc(process.pid, created).kill()
    assert process.wait(5) == -signal.SIGKILL


@posix_only
def test_descendants_lists_the_whole_subtree(sleepers: list[subprocess.Popen[bytes]]) -> None:
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen({SLEEPER!r}); print('ok', flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    sleepers.append(parent)
    assert parent.stdout is not None and parent.stdout.readline() == b"ok\n"
    found = descendants(parent.pid)
    assert len(found) == 1 and found[0].alive()
    for proc in found:
        proc.kill()
    assert descendants(999_999_999) == []


@posix_only
def test_marked_finds_processes_by_their_environment(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    marker = uuid.uuid4().hex
    mine = sleeper(sleepers, PAL_RUN_ID=marker, PAL_RUN_AUTH="a1")
    sleeper(sleepers, PAL_RUN_ID=marker + "0", PAL_RUN_AUTH="a1")  # another run
    sleeper(sleepers, PAL_RUN_ID=marker, PAL_RUN_AUTH="b2")  # another daemon's run
    for process in sleepers:  # started: past exec, with their own environment
        wait_until(lambda p=process: "PAL_RUN_AUTH" in psutil.Process(p.pid).environ())
    assert [p.pid for p in marked({"PAL_RUN_ID": marker, "PAL_RUN_AUTH": "a1"})] == [mine.pid]
    assert len(marked({"PAL_RUN_ID": marker})) == 2
    assert marked({"PAL_RUN_ID": marker, "PAL_RUN_AUTH": "a1"}, exclude=[mine.pid]) == []


# -- POSIX ------------------------------------------------------------------------------------


def test_posix_children_get_their_own_session() -> None:
    assert PosixTree().spawn_options() == {"start_new_session": True}
    assert PosixTree().refuse(["codex.cmd"]) is None


@posix_only
def test_posix_signals_the_group_only_while_it_can_be_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    tree = PosixTree()
    tree.terminate(4321, True, [])
    tree.kill(4321, True, [])
    assert sent == [(4321, signal.SIGTERM), (4321, signal.SIGKILL)]
    sent.clear()
    # The child has exited and no recorded member of its group is alive: the group id
    # may belong to someone else by now.
    tree.kill(4321, False, [Proc(4321, 0.0)])
    assert sent == []


@posix_only
def test_posix_find_adds_marked_processes_to_the_subtree(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    marker = uuid.uuid4().hex
    stray = sleeper(sleepers, PAL_RUN_ID=marker)
    wait_until(lambda: psutil.Process(stray.pid).environ().get("PAL_RUN_ID") == marker)
    tree = PosixTree()
    assert [p.pid for p in tree.find(os.getpid(), False, {"PAL_RUN_ID": marker})] == [stray.pid]
    assert stray.pid not in [p.pid for p in tree.find(os.getpid(), False, None)]


# -- Windows (what it would do) -----------------------------------------------------------------


def test_windows_children_get_a_process_group_and_no_window() -> None:
    options = WindowsTree(run=Recorder()).spawn_options()
    assert options == {"creationflags": 0x00000200 | 0x08000000}


def test_windows_refuses_cmd_and_bat_shims() -> None:
    tree = WindowsTree(run=Recorder())
    for program in [r"C:\npm\codex.CMD", "claude.cmd", "run.bat"]:
        reason = tree.refuse([program, "the prompt"])
        assert reason is not None and "config.binary" in reason and program in reason
    assert tree.refuse([r"C:\npm\codex.exe", "x"]) is None


def test_taskkill_is_run_by_its_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SystemRoot", "D:\\Win")
    assert taskkill_argv(42, force=False) == [r"D:\Win\System32\taskkill.exe", "/T", "/PID", "42"]
    monkeypatch.delenv("SystemRoot")
    assert taskkill_argv(42, force=True) == [
        r"C:\Windows\System32\taskkill.exe",
        "/T",
        "/F",
        "/PID",
        "42",
    ]


def test_windows_without_a_job_uses_taskkill_on_the_tree() -> None:
    run = Recorder()
    tree = WindowsTree(run=run)
    tree.attach(42)  # no job object here (not Windows): falls back to taskkill
    tree.terminate(42, True, [])
    tree.kill(42, True, [])
    assert run.argvs == [taskkill_argv(42, force=False), taskkill_argv(42, force=True)]
    run.argvs.clear()
    tree.terminate(42, False, [])  # once the child exited its pid may be someone else's
    tree.kill(42, False, [])
    assert run.argvs == []
    tree.close()


@posix_only
def test_windows_kill_also_kills_recorded_processes(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    process = sleeper(sleepers)
    proc = Proc.of(psutil.Process(process.pid))
    assert proc is not None
    WindowsTree(run=Recorder(), use_job=False).kill(process.pid, False, [proc])
    assert process.wait(5) == -signal.SIGKILL


def test_windows_find_lists_the_subtree_only_while_the_child_runs() -> None:
    tree = WindowsTree(run=Recorder())
    assert tree.find(os.getpid(), False, {"PAL_RUN_ID": "x"}) == []


def test_the_tree_is_chosen_by_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert isinstance(process_tree(), WindowsTree)
    monkeypatch.setattr(sys, "platform", "linux")
    assert isinstance(process_tree(), PosixTree)


async def test_spawn_refuses_what_the_tree_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "process_tree", lambda: WindowsTree(run=Recorder()))
    with pytest.raises(CannotSpawn) as raised:
        await spawn([r"C:\npm\codex.cmd", "hi"], cwd=".", env={}, on_output=lambda s, d: None)
    assert ".cmd/.bat" in raised.value.message
    assert proctree.CREATE_NO_WINDOW == 0x08000000
