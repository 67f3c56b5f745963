"""The supervisor with real processes: output, exits, pipes left open, and kills that leave
no survivor (checked with psutil: gone, reused pid, or a zombie waiting for init)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from pal.daemon import supervisor
from pal.daemon.supervisor import CannotSpawn, Child, Exit, LineSplitter, spawn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process trees")

GRACE = 0.3

# A process that ignores SIGTERM, says so on stdout, and sleeps.
STUBBORN = textwrap.dedent(
    """
    import os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn", os.getpid(), flush=True)
    time.sleep(60)
    """
)


def python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


class Output:
    """Collects what a child writes, per stream."""

    def __init__(self) -> None:
        self.data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data

    @property
    def stdout(self) -> bytes:
        return bytes(self.data["stdout"])

    def stubborn_pids(self) -> list[int]:
        return [
            int(line.split()[1])
            for line in self.stdout.decode().splitlines()
            if line.startswith("stubborn ")
        ]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def identity(pid: int) -> tuple[int, float]:
    return pid, psutil.Process(pid).create_time()


def gone(ident: tuple[int, float]) -> bool:
    """No such process any more: no pid, another process under it, or a zombie."""
    pid, created = ident
    try:
        process = psutil.Process(pid)
        return process.create_time() != created or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    """Children a test started; whatever is left of them is killed afterwards."""
    started: list[Child] = []
    yield started
    for child in started:
        await child.kill(0)


async def start(
    children: list[Child],
    argv: list[str],
    output: Output,
    *,
    marker: str | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> Child:
    child = await spawn(
        argv,
        cwd=cwd or os.getcwd(),
        env=env if env is not None else dict(os.environ),
        on_output=output,
        marker=marker,
    )
    children.append(child)
    return child


# -- output and exit ------------------------------------------------------------------------


async def test_output_and_exit_code_reach_the_caller(children: list[Child]) -> None:
    output = Output()
    script = "import sys; print('out'); sys.stderr.write('err'); sys.exit(3)"
    child = await start(children, python(script), output)
    exit_ = await child.wait()
    assert exit_ == Exit(3) and exit_.describe() == "exit code 3"
    assert output.data == {"stdout": b"out\n", "stderr": b"err"}


async def test_stdin_is_empty_and_env_and_cwd_are_exactly_those_given(
    children: list[Child], tmp_path: Path
) -> None:
    output = Output()
    script = """
        import json, os, sys
        print(json.dumps([sys.stdin.read(), os.getcwd(), dict(os.environ)]))
    """
    env = {"ONLY": "1", "PATH": os.environ.get("PATH", "")}
    child = await start(children, python(script), output, cwd=str(tmp_path), env=env, marker="m1")
    assert await child.wait() == Exit(0)
    stdin, cwd, environ = json.loads(output.stdout)
    assert stdin == ""
    assert Path(cwd).resolve() == tmp_path.resolve()
    assert {k: v for k, v in environ.items() if not k.startswith("LC_")} == {
        **env,
        "PAL_RUN_ID": "m1",
    }


@pytest.mark.parametrize(
    ("argv", "cwd", "expected"),
    [
        ([], None, "nothing to run"),
        (["/no/such/program"], None, "no such program"),
        ([sys.executable], "/no/such/dir", "the working directory /no/such/dir does not exist"),
        ([sys.executable, "-c", "pass\0"], None, "cannot start"),
    ],
)
async def test_what_cannot_start_is_said_clearly(
    argv: list[str], cwd: str | None, expected: str
) -> None:
    with pytest.raises(CannotSpawn) as raised:
        await spawn(argv, cwd=cwd or os.getcwd(), env={}, on_output=Output())
    assert expected in raised.value.message


async def test_a_program_that_is_not_executable_is_said_clearly(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(CannotSpawn) as raised:
        await spawn([str(script)], cwd=str(tmp_path), env={}, on_output=Output())
    assert "permission denied" in raised.value.message


async def test_a_command_line_that_is_too_long_is_said_clearly(tmp_path: Path) -> None:
    huge = "x" * (1 << 18)  # one argument over Linux's 128 KiB limit (MAX_ARG_STRLEN)
    with pytest.raises(CannotSpawn) as raised:
        await spawn(["/bin/echo", huge], cwd=str(tmp_path), env={}, on_output=Output())
    assert "command line (262153 bytes) is too long" in raised.value.message


async def test_an_output_handler_that_raises_does_not_stop_the_reading(
    children: list[Child],
) -> None:
    seen: list[bytes] = []

    def broken(stream: str, data: bytes) -> None:
        seen.append(data)
        raise RuntimeError("consumer bug")

    script = "import sys\nfor i in range(200): sys.stdout.write('x' * 10000 + '\\n')"
    child = await spawn(python(script), cwd=os.getcwd(), env=dict(os.environ), on_output=broken)
    children.append(child)
    assert await child.wait() == Exit(0)
    assert sum(map(len, seen)) == 200 * 10001


async def test_floods_on_both_pipes_at_once_arrive_whole(children: list[Child]) -> None:
    output = Output()
    script = """
        import sys
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for _ in range(320):  # 20 MiB each, interleaved: one unread pipe would block it
            out.write(b"o" * 65536)
            err.write(b"e" * 65536)
        out.flush(); err.flush()
    """
    child = await start(children, python(script), output)
    assert await asyncio.wait_for(child.wait(), 30) == Exit(0)
    assert len(output.data["stdout"]) == 20 * 1024 * 1024
    assert len(output.data["stderr"]) == 20 * 1024 * 1024
    assert output.data["stdout"].count(b"o") == 20 * 1024 * 1024
    assert output.data["stderr"].count(b"e") == 20 * 1024 * 1024


async def test_a_3_mib_line_is_one_line(children: list[Child]) -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    script = """
        import sys
        sys.stdout.write("{" + "a" * (3 * 1024 * 1024) + "}\\n" + "last line without end")
    """

    def on_output(stream: str, data: bytes) -> None:
        if stream == "stdout":
            splitter.feed(data)

    child = await spawn(python(script), cwd=os.getcwd(), env=dict(os.environ), on_output=on_output)
    children.append(child)
    assert await child.wait() == Exit(0)
    splitter.close()
    assert len(lines) == 2
    assert len(lines[0]) == 3 * 1024 * 1024 + 2 and lines[0][0] == "{" and lines[0][-1] == "}"
    assert lines[1] == "last line without end"


async def test_invalid_utf8_passes_through_as_bytes(children: list[Child]) -> None:
    output = Output()
    raw = b"ok \xff\xfe\xc3 \xe2\x82\n\x00end"
    script = f"import sys; sys.stdout.buffer.write({raw!r}); sys.stderr.buffer.write({raw!r})"
    child = await start(children, python(script), output)
    assert await child.wait() == Exit(0)
    assert output.data == {"stdout": raw, "stderr": raw}


# -- pipes held open by a leftover -----------------------------------------------------------


async def test_wait_returns_when_a_leftover_keeps_the_pipes_open(
    children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "PIPE_DRAIN_TIMEOUT", 0.3)
    output = Output()
    script = f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], start_new_session=True)
        print("leader done", flush=True)
    """
    child = await start(children, python(script), output, marker=uuid.uuid4().hex)
    started = time.monotonic()
    await until(lambda: len(output.stubborn_pids()) == 1)
    leftover = identity(output.stubborn_pids()[0])
    assert await asyncio.wait_for(child.wait(), 5) == Exit(0)
    assert time.monotonic() - started < 3
    assert not gone(leftover)
    assert await child.reap(GRACE) == 1
    assert gone(leftover)
    assert await child.reap(GRACE) == 0


async def test_reap_after_a_clean_exit_finds_nothing(children: list[Child]) -> None:
    child = await start(children, python("pass"), Output(), marker=uuid.uuid4().hex)
    assert await child.wait() == Exit(0)
    assert await child.reap(GRACE) == 0


# -- kill -------------------------------------------------------------------------------------


async def test_kill_stops_a_sleeping_child(children: list[Child]) -> None:
    output = Output()
    child = await start(
        children, python("print('up', flush=True); import time; time.sleep(60)"), output
    )
    await until(lambda: output.stdout == b"up\n")
    leader = identity(child.pid)
    exit_ = await child.kill(GRACE)
    assert exit_ == Exit(None, signal.SIGTERM) and exit_.describe() == "killed by SIGTERM"
    assert gone(leader)
    assert await child.wait() == exit_


async def test_kill_escalates_to_sigkill_after_the_grace_period(children: list[Child]) -> None:
    output = Output()
    child = await start(children, python(STUBBORN), output)
    await until(lambda: output.stubborn_pids() == [child.pid])
    leader = identity(child.pid)
    started = time.monotonic()
    exit_ = await child.kill(GRACE)
    elapsed = time.monotonic() - started
    assert exit_ == Exit(None, signal.SIGKILL) and exit_.describe() == "killed by SIGKILL"
    assert GRACE <= elapsed < GRACE + 2
    assert gone(leader)


async def test_kill_reaches_a_grandchild_in_its_own_session_while_its_parent_lives(
    children: list[Child],
) -> None:
    output = Output()
    script = f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], start_new_session=True)
        time.sleep(60)
    """
    child = await start(children, python(script), output)
    await until(lambda: len(output.stubborn_pids()) == 1)
    grandchild, leader = identity(output.stubborn_pids()[0]), identity(child.pid)
    assert os.getpgid(grandchild[0]) != child.pid  # out of reach of the group signal
    assert await child.kill(GRACE) == Exit(None, signal.SIGTERM)
    assert gone(leader) and gone(grandchild)


# Starts STUBBORN (given as argv[1]) in its own session, and exits.
LAUNCHER = (
    "import subprocess, sys; "
    "subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True)"
)

# The grandchild's parent exits at once: it is reparented before any poll can see it.
DOUBLE_FORK = f"""
    import subprocess, sys, time
    subprocess.run([sys.executable, "-c", {LAUNCHER!r}, {STUBBORN!r}])
    print("middle gone", flush=True)
    time.sleep(60)
"""


async def test_kill_finds_a_double_forked_grandchild_by_its_marker(
    children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 3600)  # only the marker can find it
    output = Output()
    child = await start(children, python(DOUBLE_FORK), output, marker=uuid.uuid4().hex)
    await until(lambda: b"middle gone" in output.stdout and len(output.stubborn_pids()) == 1)
    grandchild = identity(output.stubborn_pids()[0])
    assert grandchild[0] not in [p.pid for p in psutil.Process(child.pid).children(True)]
    await child.kill(GRACE)
    assert gone(grandchild)


async def test_without_a_marker_a_double_forked_grandchild_escapes(
    children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counterpart of the test above: proves that the marker is what found it."""
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 3600)
    output = Output()
    child = await start(children, python(DOUBLE_FORK), output)
    await until(lambda: b"middle gone" in output.stdout and len(output.stubborn_pids()) == 1)
    grandchild = identity(output.stubborn_pids()[0])
    try:
        monkeypatch.setattr(supervisor, "PIPE_DRAIN_TIMEOUT", 0.1)
        await child.kill(GRACE)
        assert not gone(grandchild)
    finally:
        os.kill(grandchild[0], signal.SIGKILL)


async def test_the_poller_records_descendants_that_later_leave_the_tree(
    children: list[Child], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(supervisor, "POLL_INTERVAL", 0.05)
    go = tmp_path / "go"
    output = Output()
    middle = (
        LAUNCHER + f"\nimport os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)"
    )
    script = f"""
        import subprocess, sys, time
        subprocess.run([sys.executable, "-c", {middle!r}, {STUBBORN!r}])
        print("middle gone", flush=True)
        time.sleep(60)
    """
    child = await start(children, python(script), output)  # no marker
    await until(lambda: len(output.stubborn_pids()) == 1)
    grandchild = identity(output.stubborn_pids()[0])
    await until(lambda: grandchild[0] in [p.pid for p in child.descendants])
    go.touch()  # now its parent exits and it is reparented out of the tree
    await until(lambda: b"middle gone" in output.stdout)
    assert grandchild[0] not in [p.pid for p in psutil.Process(child.pid).children(True)]
    await child.kill(GRACE)
    assert gone(grandchild)


async def test_kill_after_the_exit_is_a_no_op(children: list[Child]) -> None:
    child = await start(children, python("import sys; sys.exit(4)"), Output())
    assert await child.wait() == Exit(4)
    started = time.monotonic()
    assert await child.kill(GRACE) == Exit(4)
    assert await child.kill(GRACE) == Exit(4)
    assert time.monotonic() - started < GRACE


async def test_two_kills_at_once_both_return_the_same_exit(children: list[Child]) -> None:
    output = Output()
    child = await start(children, python(STUBBORN), output)
    await until(lambda: output.stubborn_pids() == [child.pid])
    first, second = await asyncio.gather(child.kill(GRACE), child.kill(GRACE))
    assert first == second == Exit(None, signal.SIGKILL)


# -- Exit and LineSplitter --------------------------------------------------------------------


def test_exit_describes_itself() -> None:
    assert Exit.from_returncode(0) == Exit(0)
    assert Exit.from_returncode(-9) == Exit(None, 9)
    assert Exit(None, 9).describe() == "killed by SIGKILL"
    assert Exit(None, 999).describe() == "killed by signal 999"
    assert Exit(None).describe() == "no exit (the process could not be killed)"


def test_line_splitter_joins_pieces_and_drops_line_ends() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    for piece in [b"one\r\ntw", b"o\n", b"", b"\n", "€".encode()[:1], "€".encode()[1:] + b"\nend"]:
        splitter.feed(piece)
    assert lines == ["one", "two", "", "€"]
    splitter.close()
    assert lines[-1] == "end"
    splitter.close()
    assert len(lines) == 5


def test_line_splitter_replaces_invalid_bytes() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    splitter.feed(b'{"a": "\xff"}\n')
    assert lines == ['{"a": "\ufffd"}']


def test_line_splitter_drops_a_line_that_is_too_long_and_keeps_going() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line=10)
    splitter.feed(b"short\n" + b"x" * 8)
    splitter.feed(b"y" * 8)  # now over the limit: dropped
    splitter.feed(b"z" * 100 + b"\nafter\n" + b"q" * 11)
    splitter.close()
    assert lines == ["short", "after"]
    assert splitter.dropped_lines == 2


def test_line_splitter_keeps_going_when_its_consumer_raises() -> None:
    seen: list[str] = []

    def broken(line: str) -> None:
        seen.append(line)
        raise ValueError("bad")

    splitter = LineSplitter(broken)
    splitter.feed(b"a\nb\n")
    assert seen == ["a", "b"]
