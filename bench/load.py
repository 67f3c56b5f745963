"""wrk helpers: make sure wrk is installed, run it with one of the Lua scripts, parse its result.

The Lua scripts (``post_message.lua``, ``get.lua``, sharing ``stats.lua``) print one line
``BENCH_JSON {...}`` from wrk's ``done()`` hook: response counts by status, wrk's error counts
and latency percentiles from wrk's own histogram. That line is the source of every figure;
wrk's human-readable ``--latency`` report is kept alongside for reference.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POST_SCRIPT = HERE / "post_message.lua"
PACED_POST_SCRIPT = HERE / "post_paced.lua"
GET_SCRIPT = HERE / "get.lua"
MARKER = "BENCH_JSON "


class MeasurementError(RuntimeError):
    """A figure could not be measured (tool missing, tool failed, server gone...)."""


def ensure_wrk() -> str:
    """The path of ``wrk``; installs Debian's ``wrk`` package when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise MeasurementError(
            "wrk is not installed and this is not root: install it with "
            "`sudo apt-get install -y wrk` (Debian/Ubuntu package `wrk`), then run again"
        )
    print("wrk not found: installing it with apt-get (Debian package `wrk`)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise MeasurementError("could not install wrk with `apt-get install -y wrk`")
    return found


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; idle and iowait excluded)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _named_processes_cpu_s(name: str) -> dict[int, float]:
    """CPU seconds used so far by each process whose command name is ``name``."""
    found: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1 : raw.rfind(")")]
        if comm == name:
            fields = raw.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


def _rusage_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class CpuWatch:
    """Who used the CPUs during a run: the server, its database server (PostgreSQL's
    processes, when ``database_process`` names them), wrk, this script, and everything else.

    Cores = CPU seconds / wall seconds, so 1.0 is one core kept busy all the time.
    """

    def __init__(self, server_pid: int | None, database_process: str | None = None) -> None:
        self.server_pid = server_pid
        self.database_process = database_process
        self.ok = os.path.exists("/proc/stat")
        self.cores: dict[str, float] = {}

    def __enter__(self) -> CpuWatch:
        if self.ok:
            self._start, self._db_start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.ok:
            return
        end, db_end = self._snapshot()
        wall = end["wall"] - self._start["wall"]
        if wall <= 0:
            return
        used = {k: (end[k] - self._start[k]) / wall for k in end}
        database = sum(v - self._db_start.get(pid, 0.0) for pid, v in db_end.items()) / wall
        other = used["machine"] - used["server"] - used["wrk"] - used["me"] - database
        self.cores = {
            "server": round(used["server"], 2),
            "wrk": round(used["wrk"], 2),
            "bench_script": round(used["me"], 2),
            "other_processes": round(max(0.0, other), 2),
            "machine": round(used["machine"], 2),
        }
        if self.database_process:
            self.cores["database"] = round(database, 2)

    def _snapshot(self) -> tuple[dict[str, float], dict[int, float]]:
        """Totals so far (seconds), and the database server's processes' CPU seconds."""
        server = 0.0
        if self.server_pid is not None:
            try:
                server = _process_cpu_s(self.server_pid)
            except OSError:
                server = 0.0
        totals = {
            "wall": time.monotonic(),
            "machine": _machine_busy_s(),
            "server": server,
            "wrk": _rusage_s(resource.RUSAGE_CHILDREN),
            "me": _rusage_s(resource.RUSAGE_SELF),
        }
        db = _named_processes_cpu_s(self.database_process) if self.database_process else {}
        return totals, db


@dataclass
class WrkResult:
    """One wrk run: what it did and what it measured (latencies in milliseconds)."""

    label: str
    connections: int
    threads: int
    duration_s: float
    responses: int
    sent: int
    status_expected: int
    status_2xx: int
    status_other: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    command: list[str] = field(default_factory=list)
    report: str = ""
    cpu_cores: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Responses per second over the run."""
        return self.responses / self.duration_s if self.duration_s else 0.0

    @property
    def expected_rate(self) -> float:
        """Responses with the expected status (201 for posts, 200 for reads) per second."""
        return self.status_expected / self.duration_s if self.duration_s else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[k] for k in ("connect", "read", "write"))

    @property
    def in_flight(self) -> int:
        """Requests wrk sent whose response it never read (cut off when the time was up)."""
        return self.sent - self.responses

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "connections": self.connections,
            "threads": self.threads,
            "duration_s": round(self.duration_s, 3),
            "responses": self.responses,
            "requests_per_s": round(self.rate, 1),
            "sent": self.sent,
            "in_flight_at_stop": self.in_flight,
            "status_expected": self.status_expected,
            "status_2xx": self.status_2xx,
            "status_other": self.status_other,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "cpu_cores": self.cpu_cores,
            "command": self.command,
        }


def run_wrk(
    url: str,
    *,
    label: str,
    script: Path,
    connections: int,
    duration: int,
    threads: int = 1,
    script_args: tuple[str, ...] = (),
    timeout_s: int = 10,
    server_pid: int | None = None,
    database_process: str | None = None,
) -> WrkResult:
    """Run wrk against ``url`` for ``duration`` seconds and return its parsed result; with
    ``server_pid``, also how many cores the server, wrk and other processes used meanwhile
    (and the database server, when ``database_process`` names its processes)."""
    wrk = ensure_wrk()
    threads = max(1, min(threads, connections))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if script_args:
        command += ["--", *script_args]
    with CpuWatch(server_pid, database_process) as cpu:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise MeasurementError(
            f"wrk failed for {label} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    data = json.loads(lines[-1][len(MARKER) :])
    report = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith(MARKER))
    return WrkResult(
        label=label,
        connections=connections,
        threads=threads,
        duration_s=data["duration_us"] / 1e6,
        responses=data["responses"],
        sent=data["sent"],
        status_expected=data["status_expected"],
        status_2xx=data["status_2xx"],
        status_other=data["status_other"],
        errors=data["errors"],
        latency_ms={k: round(v / 1000, 3) for k, v in data["latency_us"].items()},
        command=command,
        report=report,
        cpu_cores=cpu.cores,
    )
