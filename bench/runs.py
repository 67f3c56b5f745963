"""pal run benchmarks: claim to process start, kill to tree gone, twenty floods at once.

    .venv/bin/python bench/runs.py                    # SQLite under a fresh temporary PAL_HOME
    .venv/bin/python bench/runs.py --deliveries 20 --kills 2 --flood 500000   # quicker

A fresh server and one real ``pal daemon`` (no ``--dry-run``, ``PAL_KILL_GRACE`` from
``--grace``) with the fake ``codex`` of tests/fakes first on its PATH, then:

1. **Claimed to started.** A ``command`` agent whose command is ``/bin/sh -c "date +%s%N >
   DIR/{run_id}.start"``: the shell writes the time it started. ``--deliveries`` messages, one
   after the other (each waits for the previous run to complete); the latency is that time
   minus the delivery's ``claimed_at`` (stamped by the server on the same machine's clock).
   Ceiling: the same ``/bin/sh -c "date +%s%N"`` spawned from Python, start time minus the
   time just before the spawn.
2. **Kill to tree gone.** A message to the fake codex with ``[fake:grandchild]
   [fake:ignore_sigterm] [fake:sleep=600]``: the run and a grandchild in its own session both
   ignore SIGTERM, so only the SIGKILL after the grace ends them. Once the run is running
   with its pid reported and the grandchild's pid recorded, ``POST /api/runs/<id>/kill``;
   measured until both processes are gone (no such process, or a zombie) and until the run
   shows ``killed``. ``--kills`` times, each in its own room. Ceiling: SIGKILL to a
   ``sleep`` spawned from Python until it is gone.
3. **Twenty floods.** ``--floods`` messages in as many rooms, posted at once, each
   ``[fake:no_reply] [fake:flood=BYTES]``: all must complete within ``--timeout`` (no
   deadlock) with every byte of the flood stored (``GET /api/runs/<id>/output`` paged to the
   end) and nothing dropped. The daemon's RSS is sampled every 50 ms; its CPU is read from
   /proc. Ceiling: the same fakes run directly from Python, their output to /dev/null.

Prints a table and writes bench/results/runs.json. Exit status: 0 when every target is met, 1
when one is missed, 2 when a measurement could not be taken.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from daemons import cpu_s, percentile, provision, rss_mb, served, wait_for
from load import MeasurementError
from report import Figure, run_and_report
from server import ServerProcess, free_port, server_env, start_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMMAND_AGENT = "starter"
CODEX_AGENT = "codex"
TARGET_START_P50_MS = 50.0
KILL_SLACK_S = 2.0  # kill → tree gone within the grace plus this
SHIPPER_BUFFER_MB = 8.0  # the daemon's OutputShipper keeps at most 8 MiB per run
KILL_SCENARIO = "stop when asked [fake:grandchild] [fake:ignore_sigterm] [fake:sleep=600]"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deliveries", type=int, default=50, help="deliveries in step 1 (50)")
    p.add_argument("--grace", type=float, default=2.0, help="PAL_KILL_GRACE, seconds (2)")
    p.add_argument("--kills", type=int, default=5, help="kills in step 2 (5)")
    p.add_argument("--floods", type=int, default=20, help="concurrent runs in step 3 (20)")
    p.add_argument("--flood", type=int, default=2_000_000, help="stdout bytes per run (2000000)")
    p.add_argument("--timeout", type=float, default=120, help="step 3 must end within (120 s)")
    p.add_argument("--output", type=Path, default=HERE / "results" / "runs.json")
    return p.parse_args(argv)


def install_fakes(bin_dir: Path) -> Path:
    """tests.fakes.install_fakes: the repository root must be importable for it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fakes import install_fakes as install

    return install(bin_dir)


# -- processes -------------------------------------------------------------------------------


def gone(proc: psutil.Process) -> bool:
    """The process no longer runs: no such process, a zombie, or its pid taken by another
    (``psutil.Process`` remembers the create time)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Daemon:
    """A real ``python -m pal daemon`` process that runs agents (no ``--dry-run``)."""

    def __init__(
        self, workdir: Path, server_url: str, api_key: str, extra_env: dict[str, str]
    ) -> None:
        self.local_port = free_port()
        self.log = workdir / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
        env.update(PAL_HOME=str(workdir / "daemon-home"), PAL_LOG_LEVEL="warning", **extra_env)
        argv = [sys.executable, "-m", "pal", "daemon", "--server", server_url]
        argv += ["--api-key", api_key, "--local-port", str(self.local_port)]
        argv += ["--interval", "1000"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise MeasurementError(
                f"the daemon exited with {self.proc.returncode}; its log ({self.log}):\n"
                + self.log.read_text(errors="replace")[-4000:]
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RssSampler:
    """The peak VmRSS of a process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, MeasurementError):
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the API ---------------------------------------------------------------------------------


def api(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    r = client.request(method, path, **kwargs)
    if r.status_code >= 300:
        raise MeasurementError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
    return dict(r.json())


def post(client: httpx.Client, room: str, agent: str, text: str) -> int:
    body = {"room": room, "sender": "alice", "mentions": [agent], "content": text}
    return int(api(client, "POST", "/api/messages", json=body)["message"]["id"])


def new_room(client: httpx.Client, name: str) -> str:
    api(client, "POST", "/api/rooms", json={"name": name})
    return name


def run_of(client: httpx.Client, room: str, message_id: int) -> dict[str, Any] | None:
    """The newest run of ``message_id`` in ``room``, or None while there is none."""
    runs = api(client, "GET", "/api/runs", params={"room": room, "limit": 20})["runs"]
    mine = [r for r in runs if r["message_id"] == message_id]
    return max(mine, key=lambda r: r["id"]) if mine else None


def server_time_ms(stamp: str) -> float:
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() * 1000


def stored_stdout(client: httpx.Client, run_id: int) -> tuple[int, int]:
    """(bytes of stdout the server keeps for the run, its ``output_dropped``), paging with
    ``after`` until ``more`` is false."""
    after, size, dropped = -1, 0, 0
    while True:
        page = api(
            client, "GET", f"/api/runs/{run_id}/output", params={"after": after, "limit": 5000}
        )
        size += sum(len(c["data"].encode()) for c in page["chunks"] if c["stream"] == "stdout")
        dropped = int(page["output_dropped"])
        if not page["more"]:
            return size, dropped
        after = page["next_after"]


# -- step 1: claimed → started ---------------------------------------------------------------


def spawn_ceiling_ms(count: int) -> list[float]:
    """Spawn ``/bin/sh -c "date +%s%N"`` from Python: its start time minus the time just
    before the spawn, in ms."""
    times = []
    for _ in range(count):
        before = time.time_ns()
        out = subprocess.run(
            ["/bin/sh", "-c", "date +%s%N"], capture_output=True, check=True, text=True
        )
        times.append((int(out.stdout) - before) / 1e6)
    return times


def one_start(
    client: httpx.Client, room: str, starts: Path, index: int, daemon: Daemon
) -> tuple[int, int]:
    """Post one message to the command agent; wait for its start file and its run to
    complete. Returns (run id, the start time in ns the shell wrote)."""
    before = set(starts.iterdir())
    post(client, room, COMMAND_AGENT, f"start {index}")

    def written() -> tuple[int, int] | None:
        for path in set(starts.iterdir()) - before:
            text = path.read_text()
            if text.endswith("\n"):
                return int(path.name.split(".")[0]), int(text)
        return None

    deadline = time.monotonic() + 30
    found = None
    while found is None:
        if time.monotonic() > deadline:
            daemon.check_alive()
            raise MeasurementError(f"delivery {index}: no agent process started within 30 s")
        found = written()
        if found is None:
            time.sleep(0.002)
    run_id, started_ns = found

    def finished() -> dict[str, Any] | None:
        run = dict(api(client, "GET", f"/api/runs/{run_id}")["run"])
        return run if run["status"] != "running" else None

    run = wait_for(finished, 30, f"the end of run {run_id}")
    if run["status"] != "completed":
        raise MeasurementError(f"run {run_id} of the command agent ended {run['status']}: {run}")
    return run_id, started_ns


def claim_to_start(
    client: httpx.Client, computer_id: str, workdir: Path, daemon: Daemon, count: int
) -> tuple[list[float], list[float]]:
    """Step 1: (latencies claimed → started in ms, the spawn ceiling in ms)."""
    starts = workdir / "starts"
    starts.mkdir()
    api(
        client,
        "POST",
        "/api/agents/onboard",
        json={
            "agent_key": COMMAND_AGENT,
            "display_name": "Starter",
            "runtime": "command",
            "computer_id": computer_id,
        },
    )
    script = f"date +%s%N > {shlex.quote(str(starts))}/{{run_id}}.start"
    config = {"command": ["/bin/sh", "-c", script]}
    api(client, "PATCH", f"/api/agents/{COMMAND_AGENT}", json={"config": config})
    room = new_room(client, "starts")
    for i in range(3):  # warm-up: first session, first prompt, connections
        one_start(client, room, starts, -1 - i, daemon)
    measured = [one_start(client, room, starts, i, daemon) for i in range(count)]
    ceiling = spawn_ceiling_ms(count)

    runs = api(client, "GET", "/api/runs", params={"agent": COMMAND_AGENT, "limit": 1000})["runs"]
    delivery_of = {r["id"]: r["delivery_id"] for r in runs}
    deliveries = api(
        client, "GET", "/api/deliveries", params={"agent": COMMAND_AGENT, "limit": 1000}
    )["deliveries"]
    claimed = {d["id"]: d["claimed_at"] for d in deliveries}
    latencies = []
    for run_id, started_ns in measured:
        stamp = claimed.get(delivery_of.get(run_id))
        if stamp is None:
            raise MeasurementError(f"run {run_id}: no claimed_at on its delivery")
        latencies.append(started_ns / 1e6 - server_time_ms(stamp))
    return latencies, ceiling


# -- step 2: kill → tree gone ----------------------------------------------------------------


def kill_ceiling_ms(count: int = 5) -> float:
    """SIGKILL to a process spawned from Python until psutil sees it gone (p50, ms)."""
    times = []
    for _ in range(count):
        child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        proc = psutil.Process(child.pid)
        started = time.monotonic()
        child.send_signal(signal.SIGKILL)
        while not gone(proc):
            time.sleep(0.001)
        times.append((time.monotonic() - started) * 1000)
        child.wait()
    return statistics.median(times)


def one_kill(
    client: httpx.Client, room: str, records: Path, grace: float, leftovers: list[psutil.Process]
) -> tuple[float | None, float | None]:
    """Start the stubborn scenario in ``room``, kill it; (seconds until its process and
    grandchild are gone, seconds until the run shows ``killed``), None when it never did."""
    message_id = post(client, room, CODEX_AGENT, KILL_SCENARIO)

    def ready() -> tuple[dict[str, Any], int] | None:
        run = run_of(client, room, message_id)
        if run is None or run["status"] != "running" or not run["pid"]:
            return None
        pid_file = records / f"grandchild-{run['id']}.pid"
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return (run, int(text)) if text else None

    run, grandchild_pid = wait_for(ready, 30, f"the stubborn run in {room}")
    procs = []
    for pid in (run["pid"], grandchild_pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    if len(procs) != 2:
        raise MeasurementError(f"run {run['id']}: its process or grandchild already ended")
    leftovers.extend(procs)
    time.sleep(0.6)  # let the supervisor's tree poll (every 0.5 s) see the grandchild too

    started = time.monotonic()
    api(client, "POST", f"/api/runs/{run['id']}/kill", json={"requested_by": "bench"})
    tree_s = killed_s = None
    deadline = started + grace + 15
    while time.monotonic() < deadline and (tree_s is None or killed_s is None):
        now = time.monotonic()
        if tree_s is None and all(gone(p) for p in procs):
            tree_s = now - started
        if killed_s is None:
            status = api(client, "GET", f"/api/runs/{run['id']}")["run"]["status"]
            if status == "killed":
                killed_s = time.monotonic() - started
            elif status != "running":
                raise MeasurementError(f"run {run['id']} ended {status}, not killed")
        time.sleep(0.01)
    return tree_s, killed_s


def never(times: list[float | None]) -> str:
    missing = sum(t is None for t in times)
    return f"{missing} of {len(times)} never within grace + 15 s" if missing else ""


# -- step 3: floods --------------------------------------------------------------------------


def flood_ceiling_s(bin_dir: Path, workdir: Path, count: int, size: int) -> float:
    """The same ``count`` fake codex floods run directly, stdout to /dev/null: wall seconds."""
    home = workdir / "ceiling-codex-home"
    home.mkdir()
    env = {**os.environ, "CODEX_HOME": str(home)}
    argv = [str(bin_dir / "codex"), "exec", "--json", "--skip-git-repo-check"]
    argv.append(f"[fake:no_reply] [fake:flood={size}]")
    started = time.monotonic()
    children = [
        subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    codes = [c.wait() for c in children]
    if any(codes):
        raise MeasurementError(f"the fake codex failed when run directly: exit codes {codes}")
    return time.monotonic() - started


def floods(
    client: httpx.Client, daemon: Daemon, count: int, size: int, timeout: float
) -> dict[str, Any]:
    """Step 3: ``count`` flooding runs at once on the daemon."""
    rooms = [new_room(client, f"flood-{i}") for i in range(count)]
    rss_before = rss_mb(daemon.pid)
    cpu0 = cpu_s(daemon.pid)
    text = f"[fake:no_reply] [fake:flood={size}]"
    wall: float | None = None
    with RssSampler(daemon.pid) as sampler:
        started = time.monotonic()
        messages = {post(client, room, CODEX_AGENT, text): room for room in rooms}
        runs: dict[int, dict[str, Any]] = {}
        while time.monotonic() - started < timeout:
            daemon.check_alive()
            listed = api(client, "GET", "/api/runs", params={"agent": CODEX_AGENT, "limit": 200})
            runs = {r["message_id"]: r for r in listed["runs"] if r["message_id"] in messages}
            if len(runs) == count and all(r["status"] != "running" for r in runs.values()):
                wall = time.monotonic() - started
                break
            time.sleep(0.1)
    cpu1 = cpu_s(daemon.pid)
    short, dropped, least = 0, 0, None
    for run in runs.values():
        stored, run_dropped = stored_stdout(client, run["id"])
        dropped += run_dropped
        short += stored < size
        least = stored if least is None else min(least, stored)
    statuses: dict[str, int] = {}
    for run in runs.values():
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    return {
        "wall_s": wall,
        "started": len(runs),
        "completed": statuses.get("completed", 0),
        "statuses": statuses,
        "short": short + (count - len(runs)),
        "least_stored": least,
        "dropped": dropped,
        "rss_before_mb": rss_before,
        "rss_peak_mb": max(sampler.peak_mb, rss_before),
        "rss_samples": sampler.samples,
        "cpu_s": cpu1 - cpu0,
    }


# -- the whole benchmark ---------------------------------------------------------------------


def bench(args: argparse.Namespace, figures: list[Figure], stack: ExitStack) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pal-bench-runs-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    leftovers: list[psutil.Process] = []

    def kill_leftovers() -> None:
        """SIGKILL whatever the kill step started and is somehow still running."""
        for proc in leftovers:
            if not gone(proc):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()

    stack.callback(kill_leftovers)
    env = server_env(workdir / "home", free_port(), None)
    server: ServerProcess = start_server(env, workdir / "server.log")
    stack.callback(server.stop)
    client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))

    bin_dir = install_fakes(workdir / "bin")
    codex_home = workdir / "codex-home"
    codex_home.mkdir()
    records = workdir / "records"
    records.mkdir()
    made = provision(client, "bench-runs")
    computer_id = made["computer"]["id"]
    api(
        client,
        "POST",
        "/api/agents/onboard",
        json={
            "agent_key": CODEX_AGENT,
            "display_name": "Codex",
            "runtime": "codex",
            "computer_id": computer_id,
        },
    )
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    daemon = Daemon(
        workdir,
        server.url,
        made["api_key"],
        {
            "PATH": path,
            "CODEX_HOME": str(codex_home),
            "FAKE_RECORD_DIR": str(records),
            "PAL_KILL_GRACE": f"{args.grace:g}",
        },
    )
    stack.callback(daemon.stop)
    wait_for(lambda: daemon.check_alive() or served(client, computer_id), 30, "daemon connect")

    print(f"1. claimed to started, {args.deliveries} deliveries...", flush=True)
    latencies, ceiling = claim_to_start(client, computer_id, workdir, daemon, args.deliveries)
    section = f"1. Delivery claimed -> agent process started ({args.deliveries}, one at a time)"
    figures.append(
        Figure(
            section,
            "spawn /bin/sh + date from Python p50 (ceiling)",
            round(statistics.median(ceiling), 2),
            "ms",
            note=f"p90 {percentile(ceiling, 90):.2f} ms, max {max(ceiling):.2f} ms",
        )
    )
    figures.append(
        Figure(
            section,
            "claimed -> started p50",
            round(statistics.median(latencies), 1),
            "ms",
            "<=",
            TARGET_START_P50_MS,
            note="runtime command: /bin/sh -c 'date +%s%N > DIR/{run_id}.start'",
        )
    )
    for pct in (90, 99):
        value = round(percentile(latencies, pct), 1)
        figures.append(Figure(section, f"claimed -> started p{pct}", value, "ms"))
    figures.append(Figure(section, "claimed -> started max", round(max(latencies), 1), "ms"))

    print(f"2. kill to tree gone, {args.kills} kills (grace {args.grace:g} s)...", flush=True)
    trees: list[float | None] = []
    kills: list[float | None] = []
    for i in range(args.kills):
        tree_s, killed_s = one_kill(
            client, new_room(client, f"kill-{i}"), records, args.grace, leftovers
        )
        trees.append(tree_s)
        kills.append(killed_s)
    survivors = sum(not gone(p) for p in leftovers)
    limit = args.grace + KILL_SLACK_S
    section = f"2. Kill -> whole tree gone ({args.kills} kills; run and grandchild ignore SIGTERM)"
    figures.append(Figure(section, "PAL_KILL_GRACE", args.grace, "s"))
    figures.append(
        Figure(
            section,
            "SIGKILL -> gone from Python p50 (ceiling)",
            round(kill_ceiling_ms(), 2),
            "ms",
            note="the floor is the grace plus this",
        )
    )
    figures.append(
        Figure(
            section,
            "kill -> process and grandchild gone, max",
            None if None in trees else round(max(t for t in trees if t is not None), 2),
            "s",
            "<=",
            limit,
            note=never(trees),
        )
    )
    measured = [t for t in trees if t is not None]
    figures.append(
        Figure(
            section,
            "kill -> process and grandchild gone, p50",
            round(statistics.median(measured), 2) if measured else None,
            "s",
        )
    )
    figures.append(
        Figure(
            section,
            "kill -> run shows killed, max",
            None if None in kills else round(max(k for k in kills if k is not None), 2),
            "s",
            "<=",
            limit,
            note=never(kills),
        )
    )
    figures.append(Figure(section, "processes left after the kills", survivors, "", "==", 0))

    print(f"3. {args.floods} concurrent runs, {args.flood:,} bytes of stdout each...", flush=True)
    result = floods(client, daemon, args.floods, args.flood, args.timeout)
    section = f"3. {args.floods} concurrent runs with {args.flood:,}-byte stdout floods"
    figures.append(
        Figure(
            section,
            "the same fakes run directly, output to /dev/null (ceiling)",
            round(flood_ceiling_s(bin_dir, workdir, args.floods, args.flood), 2),
            "s",
        )
    )
    figures.append(
        Figure(
            section,
            "first post -> all runs finished (no deadlock)",
            None if result["wall_s"] is None else round(result["wall_s"], 2),
            "s",
            "<=",
            args.timeout,
            note=f"{result['started']} of {args.floods} runs started; {result['statuses']}",
        )
    )
    figures.append(Figure(section, "runs completed", result["completed"], "", "==", args.floods))
    least = result["least_stored"]
    figures.append(
        Figure(
            section,
            "runs with stdout stored short of the flood",
            result["short"],
            "",
            "==",
            0,
            note=f"least stored {least:,} bytes" if least is not None else "",
        )
    )
    figures.append(Figure(section, "output_dropped, all runs", result["dropped"], "B", "==", 0))
    figures.append(Figure(section, "daemon RSS before", round(result["rss_before_mb"], 1), "MB"))
    growth = result["rss_peak_mb"] - result["rss_before_mb"]
    figures.append(
        Figure(
            section,
            "daemon RSS peak",
            round(result["rss_peak_mb"], 1),
            "MB",
            note=f"{result['rss_samples']} samples, every 50 ms",
        )
    )
    figures.append(
        Figure(
            section,
            "daemon RSS growth",
            round(growth, 1),
            "MB",
            "<=",
            args.floods * SHIPPER_BUFFER_MB,
            note=f"bound: {args.floods} runs x {SHIPPER_BUFFER_MB:g} MiB output buffer each",
        )
    )
    wall = result["wall_s"]
    figures.append(
        Figure(
            section,
            "daemon CPU",
            round(result["cpu_s"], 2),
            "s",
            note=f"{result['cpu_s'] / wall:.2f} cores over the phase" if wall else "",
        )
    )

    daemon.check_alive()
    daemon.stop()
    tracebacks = sum(
        p.read_text(errors="replace").count("Traceback") for p in (server.log, daemon.log)
    )
    figures.append(Figure("4. Logs", "tracebacks in the logs", tracebacks, "", "==", 0))


def main(argv: list[str] | None = None) -> int:
    return run_and_report(bench, parse_args(argv), fail_on_miss=True)


if __name__ == "__main__":
    sys.exit(main())
