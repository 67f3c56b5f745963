"""The runs in progress, on disk, so that agent processes never outlive a dead daemon.

A run's processes live in their own session: when the daemon dies without cleaning up
(``kill -9``, a crash), they keep running. Each run in progress is therefore recorded in
``$PAL_HOME/runs/<daemon pid>-<run id>.json`` (the leader's pid and start time, the run's
``PAL_RUN_ID``/``PAL_RUN_AUTH`` marker, and the daemon's own pid and start time) and removed
when the run's processes are gone. A daemon starting with the same PAL_HOME kills what the
records of dead daemons still name (SIGTERM, a grace period, SIGKILL): the leader, matched by
pid and start time, and every process whose environment carries the run's marker. Records of
a daemon still alive (another daemon sharing PAL_HOME) are left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from pal.daemon.proctree import Proc, marked

log = logging.getLogger("pal.daemon")

POLL = 0.05


def _me() -> Proc | None:
    return Proc.of(psutil.Process(os.getpid()))


class RunRecords:
    """The run records of this daemon under ``home``/runs."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "runs"
        self._me = _me()

    def _path(self, run_id: int) -> Path:
        return self.folder / f"{os.getpid()}-{run_id}.json"

    def add(self, run_id: int, pid: int, mark: Mapping[str, str]) -> None:
        """Record run ``run_id`` (leader ``pid``); never raises (a record is a safety net)."""
        leader = Proc.of(_process(pid))
        record: dict[str, Any] = {
            "run_id": run_id,
            "pid": pid,
            "create_time": leader.create_time if leader else None,
            "mark": dict(mark),
            "daemon_pid": os.getpid(),
            "daemon_create_time": self._me.create_time if self._me else None,
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self._path(run_id)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot record run %d in %s: %s", run_id, self.folder, exc)

    def remove(self, run_id: int) -> None:
        with contextlib.suppress(OSError):
            self._path(run_id).unlink()

    def reap_orphans(self, grace: float) -> int:
        """Kill the processes of the runs of dead daemons; returns how many there were.
        Blocking (up to ``grace`` seconds when something ignores SIGTERM)."""
        found: list[Proc] = []
        done: list[Path] = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            record = _read(path)
            if record is None:
                done.append(path)
                continue
            daemon = _proc(record.get("daemon_pid"), record.get("daemon_create_time"))
            if daemon is not None and daemon.alive():
                continue  # another daemon, alive, owns this run
            leader = _proc(record.get("pid"), record.get("create_time"))
            mark = record.get("mark")
            procs = [leader] if leader is not None and leader.alive() else []
            if isinstance(mark, dict) and mark.get("PAL_RUN_ID"):
                procs += marked({str(k): str(v) for k, v in mark.items()})
            found += procs
            done.append(path)
        unique = list(dict.fromkeys(found))
        if unique:
            log.warning(
                "killing %d process(es) left running by runs of a daemon that died",
                len(unique),
                extra={"action": "orphans_killed", "count": len(unique)},
            )
            _stop(unique, grace)
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        return len(unique)


def _process(pid: int) -> Any:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _proc(pid: object, create_time: object) -> Proc | None:
    if not isinstance(pid, int) or not isinstance(create_time, (int, float)):
        return None
    return Proc(pid, float(create_time))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stop(procs: list[Proc], grace: float) -> None:
    for proc in procs:
        proc.send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(POLL)
    for proc in procs:
        proc.kill()
