"""A run's process tree: the only operating-system-specific code of the supervisor.

The supervisor starts each run as the root of its own tree and, to stop it, needs four
things from the OS: spawn options that make the tree addressable as a unit, a list of the
processes in it, a polite request to stop, and a kill that leaves no survivor. Each
:class:`ProcessTree` implementation gives exactly those four, for one child:

- POSIX (:class:`PosixTree`): the child leads its own session and process group
  (``start_new_session=True``). Stop is SIGTERM to the group and to every recorded
  descendant; kill is SIGKILL to the same. Tools that left the group (agents put shell
  commands in their own groups, daemons double-fork) are found by polling the tree, and
  — when they were reparented before a poll saw them — by the run's ``PAL_RUN_ID`` marker
  in their environment.
- Windows (:class:`WindowsTree`): ``CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`` and a job
  object with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` (the whole tree dies with the job, and
  with the daemon); stop is ``taskkill /T /PID``; kill is ``TerminateJobObject`` (or
  ``taskkill /T /F`` when no job could be made).

Processes are recorded as :class:`Proc` (pid and start time), so a pid the OS reused for
an unrelated process is never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped, unused-ignore]

log = logging.getLogger("pal.daemon")

# Start times of one process read twice may differ by rounding; a reused pid starts later.
_SAME_START = 0.01

# Windows process creation flags (the subprocess constants exist only on Windows).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


@dataclass(frozen=True)
class Proc:
    """One recorded process: its pid and its start time (seconds since the epoch)."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, process: Any) -> Proc | None:
        """Record a ``psutil.Process``; None when it is already gone."""
        try:
            return cls(int(process.pid), float(process.create_time()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def _process(self) -> Any:
        """The live ``psutil.Process`` for this record, or None (gone, a zombie, or the pid
        now belongs to another process)."""
        try:
            process = psutil.Process(self.pid)
            if abs(float(process.create_time()) - self.create_time) > _SAME_START:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def alive(self) -> bool:
        return self._process() is not None

    def send(self, signum: int) -> None:
        """Send ``signum`` if the process still runs; never raises."""
        process = self._process()
        if process is not None:
            try:
                process.send_signal(signum)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                pass

    def kill(self) -> None:
        """Kill the process (SIGKILL / TerminateProcess) if it still runs; never raises."""
        process = self._process()
        if process is not None:
            try:
                process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                pass


def descendants(pid: int) -> list[Proc]:
    """The processes below ``pid`` now (children, grandchildren, ...)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [proc for proc in map(Proc.of, children) if proc is not None]


def marked(mark: Mapping[str, str], *, exclude: Iterable[int] = ()) -> list[Proc]:
    """The processes of this user whose environment holds every variable of ``mark`` with
    that value (other users' processes cannot be read, and are never ours)."""
    skip = {os.getpid(), *exclude}
    uid = os.getuid() if hasattr(os, "getuid") else None
    found: list[Proc] = []
    for pid in psutil.pids():  # not process_iter(): its shared cache is not thread-safe
        if pid in skip:
            continue
        try:
            process = psutil.Process(pid)
            if uid is not None and process.uids().real != uid:
                continue
            environ = process.environ()
            if all(environ.get(name) == value for name, value in mark.items()):
                proc = Proc.of(process)
                if proc is not None:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
    return found


class ProcessTree(Protocol):
    """One child's process tree. ``running`` tells whether the child itself (the tree's
    root) still runs: once it has exited its pid may belong to someone else."""

    def spawn_options(self) -> dict[str, Any]:
        """Extra keyword arguments for the spawn call."""
        ...

    def refuse(self, argv: Sequence[str]) -> str | None:
        """Why ``argv`` must not be started here, or None."""
        ...

    def attach(self, pid: int) -> None:
        """The child ``pid`` has started."""
        ...

    def find(self, pid: int, running: bool, mark: Mapping[str, str] | None) -> list[Proc]:
        """The tree's processes now, the child excluded."""
        ...

    def terminate(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        """Ask the tree and ``procs`` to stop."""
        ...

    def kill(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        """Kill the tree and ``procs`` now."""
        ...

    def close(self) -> None:
        """Release what :meth:`attach` took (nothing of the tree may be left by then)."""
        ...


class PosixTree:
    """The child leads its own session and process group (so the group id is its pid)."""

    def spawn_options(self) -> dict[str, Any]:
        return {"start_new_session": True}

    def refuse(self, argv: Sequence[str]) -> str | None:
        return None

    def attach(self, pid: int) -> None:
        pass

    def find(self, pid: int, running: bool, mark: Mapping[str, str] | None) -> list[Proc]:
        found = {proc.pid: proc for proc in descendants(pid)} if running else {}
        if mark:
            for proc in marked(mark, exclude=[pid]):
                found.setdefault(proc.pid, proc)
        return list(found.values())

    def terminate(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        self._signal(pid, running, procs, signal.SIGTERM)

    def kill(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        if sys.platform != "win32":
            self._signal(pid, running, procs, signal.SIGKILL)

    def close(self) -> None:
        pass

    @staticmethod
    def _signal(pid: int, running: bool, procs: Sequence[Proc], signum: int) -> None:
        if sys.platform != "win32":
            # The group id is the child's pid. Once the child has exited, the group lives
            # on only while a member does; otherwise the number may be someone else's.
            if running or any(_group_of(proc.pid) == pid for proc in procs if proc.alive()):
                try:
                    os.killpg(pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
            for proc in procs:
                proc.send(signum)


def _group_of(pid: int) -> int | None:
    if sys.platform == "win32":
        return None
    else:
        try:
            return os.getpgid(pid)
        except OSError:
            return None


Runner = Callable[[list[str]], object]


def _run_quietly(argv: list[str]) -> object:
    """Run a helper command (taskkill) with no window and no output; never raises."""
    try:
        if sys.platform == "win32":
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
                creationflags=CREATE_NO_WINDOW,
            )
        else:
            return subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", argv[0], exc)
        return None


def taskkill_argv(pid: int, *, force: bool) -> list[str]:
    """``taskkill /T [/F] /PID pid`` by its full path (not whatever PATH finds first)."""
    root = os.environ.get("SystemRoot") or r"C:\Windows"
    taskkill = root.rstrip("\\/") + r"\System32\taskkill.exe"
    return [taskkill, "/T", *(["/F"] if force else []), "/PID", str(pid)]


class WindowsTree:
    """The child gets a process group and no console window, and goes into a job object
    that kills the whole tree when it is terminated or closed (also when the daemon dies).
    Without a job (it could not be made), ``taskkill /T`` walks the tree instead."""

    def __init__(self, *, run: Runner = _run_quietly, use_job: bool = True) -> None:
        self._run = run
        self._use_job = use_job
        self._job: _Job | None = None

    def spawn_options(self) -> dict[str, Any]:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}

    def refuse(self, argv: Sequence[str]) -> str | None:
        # cmd.exe re-parses a .cmd/.bat file's arguments: chat text there could run
        # commands. npm installs such shims (codex.cmd, claude.cmd) next to real binaries.
        if argv and argv[0].lower().endswith((".cmd", ".bat")):
            return (
                f"{argv[0]} is a .cmd/.bat script, which cmd.exe would run with the prompt as "
                "part of a command line: point the agent's config.binary at the real "
                ".exe instead (see docs/windows-daemon.md)"
            )
        return None

    def attach(self, pid: int) -> None:
        if self._use_job:
            try:
                self._job = _Job.for_process(pid)
            except OSError as exc:
                log.warning("no job object for pid %d (%s): using taskkill /T", pid, exc)

    def find(self, pid: int, running: bool, mark: Mapping[str, str] | None) -> list[Proc]:
        return descendants(pid) if running else []

    def terminate(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        # Console programs without a window ignore a polite taskkill; kill() follows.
        if running:
            self._run(taskkill_argv(pid, force=False))

    def kill(self, pid: int, running: bool, procs: Sequence[Proc]) -> None:
        if self._job is not None:
            self._job.terminate()
        elif running:
            self._run(taskkill_argv(pid, force=True))
        for proc in procs:  # those that broke away from the job or the tree
            proc.kill()

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None


def process_tree() -> ProcessTree:
    """The implementation for this operating system."""
    return WindowsTree() if sys.platform == "win32" else PosixTree()


class _Job:
    """A Windows job object holding one process tree (``KILL_ON_JOB_CLOSE``)."""

    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle

    @classmethod
    def for_process(cls, pid: int) -> _Job:
        if sys.platform == "win32":
            return cls(_win32.job_for(pid))
        else:
            raise OSError("job objects exist only on Windows")

    def terminate(self) -> None:
        if sys.platform == "win32" and self._handle is not None:
            _win32.terminate(self._handle)

    def close(self) -> None:
        if sys.platform == "win32" and self._handle is not None:
            _win32.close(self._handle)
        self._handle = None


if sys.platform == "win32":  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    class _IoCounters(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_ulonglong)
            for name in (
                "ReadOperationCount",
                "WriteOperationCount",
                "OtherOperationCount",
                "ReadTransferCount",
                "WriteTransferCount",
                "OtherTransferCount",
            )
        ]

    class _BasicLimits(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_int64),
            ("PerJobUserTimeLimit", ctypes.c_int64),
            ("LimitFlags", wintypes.DWORD),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", wintypes.DWORD),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", wintypes.DWORD),
            ("SchedulingClass", wintypes.DWORD),
        ]

    class _ExtendedLimits(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
        _fields_ = [
            ("BasicLimitInformation", _BasicLimits),
            ("IoInfo", _IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    class _Win32:
        """The few kernel32 calls a job object needs."""

        KILL_ON_JOB_CLOSE = 0x2000
        EXTENDED_LIMIT_INFORMATION = 9  # JobObjectExtendedLimitInformation
        SET_QUOTA_AND_TERMINATE = 0x0100 | 0x0001  # PROCESS_SET_QUOTA | PROCESS_TERMINATE

        def __init__(self) -> None:
            k = ctypes.WinDLL("kernel32", use_last_error=True)
            k.CreateJobObjectW.argtypes = [wintypes.LPVOID, wintypes.LPCWSTR]
            k.CreateJobObjectW.restype = wintypes.HANDLE
            k.SetInformationJobObject.argtypes = [
                wintypes.HANDLE,
                ctypes.c_int,
                wintypes.LPVOID,
                wintypes.DWORD,
            ]
            k.SetInformationJobObject.restype = wintypes.BOOL
            k.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
            k.OpenProcess.restype = wintypes.HANDLE
            k.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
            k.AssignProcessToJobObject.restype = wintypes.BOOL
            k.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
            k.TerminateJobObject.restype = wintypes.BOOL
            k.CloseHandle.argtypes = [wintypes.HANDLE]
            k.CloseHandle.restype = wintypes.BOOL
            self._k = k

        @staticmethod
        def _error() -> OSError:
            return ctypes.WinError(ctypes.get_last_error())

        def job_for(self, pid: int) -> int:
            """A new kill-on-close job object holding process ``pid``."""
            job = self._k.CreateJobObjectW(None, None)
            if not job:
                raise self._error()
            try:
                limits = _ExtendedLimits()
                limits.BasicLimitInformation.LimitFlags = self.KILL_ON_JOB_CLOSE
                if not self._k.SetInformationJobObject(
                    job,
                    self.EXTENDED_LIMIT_INFORMATION,
                    ctypes.byref(limits),
                    ctypes.sizeof(limits),
                ):
                    raise self._error()
                process = self._k.OpenProcess(self.SET_QUOTA_AND_TERMINATE, False, pid)
                if not process:
                    raise self._error()
                try:
                    if not self._k.AssignProcessToJobObject(job, process):
                        raise self._error()
                finally:
                    self._k.CloseHandle(process)
            except OSError:
                self._k.CloseHandle(job)
                raise
            return int(job)

        def terminate(self, job: int) -> None:
            if not self._k.TerminateJobObject(job, 1):
                log.warning("TerminateJobObject failed: %s", self._error())

        def close(self, job: int) -> None:
            self._k.CloseHandle(job)

    _win32 = _Win32()
