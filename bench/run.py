"""pal benchmark suite: posting throughput and reading a large room, against a real server.

    .venv/bin/python bench/run.py                  # SQLite under a fresh temporary PAL_HOME
    .venv/bin/python bench/run.py --db postgresql://postgres@127.0.0.1:5432/pal_bench
    .venv/bin/python bench/run.py --duration 5 --profile

Steps: seed a room of 100,000 messages through the store, start ``python -m pal server``,
create 10 agents and invite them (mode ``all``) into the room ``bench``, then measure with wrk:

1. GET /health (the ceiling) and POST /api/messages, same connections and duration; then check
   the database: every 201 is a stored message, every message has one delivery per agent.
2. The seeded room: oldest page, newest page (``before=``), a rare-word and a common-word
   search, each timed with one connection (sequential requests), and again with a few.

Prints a table (every figure, its target, PASS/FAIL) and writes bench/results/latest.json.
Exits 0 whether targets pass or fail; 2 when a measurement could not be taken. See README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import pal
from checks import check_page, settled_room_counts
from hotspots import finish_recording, format_profile, parse, start_recording
from load import (
    GET_SCRIPT,
    PACED_POST_SCRIPT,
    POST_SCRIPT,
    MeasurementError,
    WrkResult,
    ensure_wrk,
    run_wrk,
)
from pal.config import ensure_home
from report import Figure, format_table, write_json
from seed import SeededRoom, seed_room
from server import (
    ServerProcess,
    free_port,
    resolved_db_url,
    scratch_postgres,
    server_env,
    start_server,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

POST_ROOM = "bench"  # the measured POST run writes here, and only it
SCRATCH_ROOM = "scratch"  # warm-up and profiling posts
HISTORY_ROOM = "history"  # the seeded room
SENDER = "alice"

# Targets (SQLite). The same targets are shown for PostgreSQL.
TARGET_POSTS_PER_S = 1_000
TARGET_SHARE_OF_CEILING = 40.0
TARGET_POST_P99_MS = 50.0
# The paced run's delays aim a little above the target rate: each connection also waits for
# its answers, which takes this long on average.
PACED_LATENCY_ALLOWANCE_MS = 15.0
TARGET_PAGE_P95_MS = 20.0
TARGET_SEARCH_P95_MS = 50.0
STOP_TIMEOUT_S = 15
NOISY_OTHER_CORES = 0.2  # other processes' CPU during a run above which figures are noisy
BUSY_CPU_PCT = 15.0  # CPU use by other processes above which the machine counts as busy


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark a real pal server (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=int, default=10, help="seconds of each POST/health run")
    p.add_argument("--connections", type=int, default=50, help="wrk connections for POST/health")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (the machine has 2 cores)")
    p.add_argument("--agents", type=int, default=10, help="agents in mode all in the POST room")
    p.add_argument("--messages", type=int, default=100_000, help="messages in the seeded room")
    p.add_argument("--read-duration", type=int, default=5, help="seconds of each read run")
    p.add_argument(
        "--read-connections",
        default="1,4",
        help="comma-separated wrk connections for the reads; targets are judged on the first",
    )
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before measuring")
    p.add_argument(
        "--db",
        metavar="URL",
        help="run against PostgreSQL: postgresql://user@host:port/DBNAME; a scratch database "
        "(DBNAME, or pal_bench) is created and dropped. Default: SQLite in a temp PAL_HOME",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, sample the server with py-spy under the same POST load",
    )
    p.add_argument("--profile-duration", type=int, default=10, help="seconds of each py-spy run")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="JSON results")
    p.add_argument("--keep", action="store_true", help="keep the temp PAL_HOME and server log")
    args = p.parse_args(argv)
    try:
        args.read_connections = [int(c) for c in str(args.read_connections).split(",") if c]
    except ValueError:
        p.error("--read-connections takes numbers separated by commas, e.g. 1,4")
    if min(args.duration, args.read_duration, args.connections, *args.read_connections) < 1:
        p.error("durations and connection counts must be at least 1")
    if args.messages < 200:
        p.error("--messages must be at least 200 (the pages read are 100 messages each)")
    return args


@dataclass
class Run:
    """Everything one benchmark run collects."""

    args: argparse.Namespace
    figures: list[Figure] = field(default_factory=list)
    wrk: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server_pid: int | None = None
    database_process: str | None = None  # "postgres": its CPU is not counted as noise

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def wrk_run(self, url: str, **kwargs: Any) -> WrkResult:
        result = run_wrk(
            url,
            threads=self.args.threads,
            server_pid=self.server_pid,
            database_process=self.database_process,
            **kwargs,
        )
        self.wrk[result.label] = result.summary()
        return result


# -- setup ------------------------------------------------------------------------------------


def create_agents_and_rooms(client: httpx.Client, agents: int) -> None:
    """Agents a0..a{n-1}, invited in mode ``all`` into the POST room and the scratch room."""
    for i in range(agents):
        body = {"key": f"a{i}", "display_name": f"Bench agent {i}", "runtime": "command"}
        client.post("/api/agents", json=body).raise_for_status()
    for room in (POST_ROOM, SCRATCH_ROOM):
        client.post("/api/rooms", json={"name": room}).raise_for_status()
        for i in range(agents):
            invite = {"agent": f"a{i}", "mode": "all"}
            client.post(f"/api/rooms/{room}/agents", json=invite).raise_for_status()


def warm_up(run: Run, server: ServerProcess) -> None:
    """A short run of each kind, so the measured runs do not pay for first-request costs."""
    if run.args.warmup < 1:
        return
    common = {"connections": run.args.connections, "duration": run.args.warmup}
    run.wrk_run(f"{server.url}/health", label="warmup health", script=GET_SCRIPT, **common)
    run.wrk_run(
        f"{server.url}/api/messages",
        label="warmup post",
        script=POST_SCRIPT,
        script_args=(SCRATCH_ROOM, SENDER),
        **common,
    )
    server.check_alive()


# -- 1. posting -------------------------------------------------------------------------------


def measure_paced_posts(run: Run, server: ServerProcess, section: str) -> None:
    """Latency at the target rate: the same connections, each pacing its requests with
    random delays so that about TARGET_POSTS_PER_S messages/s arrive (into the scratch room,
    so the correctness counts of the saturated run stay exact)."""
    args = run.args
    mean_delay_ms = 1000.0 * args.connections / TARGET_POSTS_PER_S - PACED_LATENCY_ALLOWANCE_MS
    paced = run.wrk_run(
        f"{server.url}/api/messages",
        label="post paced",
        script=PACED_POST_SCRIPT,
        script_args=(SCRATCH_ROOM, SENDER, f"{mean_delay_ms:.1f}"),
        connections=args.connections,
        duration=args.duration,
    )
    server.check_alive()
    lat = paced.latency_ms
    run.add(
        section,
        "paced run: messages/s achieved",
        round(paced.expected_rate, 1),
        "/s",
        ">=",
        TARGET_POSTS_PER_S,
        note=f"random delays, mean {mean_delay_ms:.0f} ms per connection",
    )
    run.add(
        section,
        "POST latency p99 at the target rate (paced)",
        lat["p99"],
        "ms",
        "<=",
        TARGET_POST_P99_MS,
        note=f"p50 {lat['p50']:.1f}, p90 {lat['p90']:.1f}, max {lat['max']:.1f} ms",
    )


def measure_posts(run: Run, server: ServerProcess, db_url: str) -> None:
    args = run.args
    section = (
        f"1. POST /api/messages: {args.agents} agents in mode all, "
        f"{args.connections} connections, {args.duration} s (wrk)"
    )
    common = {"connections": args.connections, "duration": args.duration}
    health = run.wrk_run(f"{server.url}/health", label="health", script=GET_SCRIPT, **common)
    server.check_alive()
    post = run.wrk_run(
        f"{server.url}/api/messages",
        label="post",
        script=POST_SCRIPT,
        script_args=(POST_ROOM, SENDER),
        **common,
    )
    server.check_alive()

    ceiling = health.expected_rate
    rate = post.expected_rate
    lat = post.latency_ms
    run.add(
        section, "messages/s (201 responses / s)", round(rate, 1), "/s", ">=", TARGET_POSTS_PER_S
    )
    run.add(
        section,
        "GET /health requests/s (ceiling)",
        round(ceiling, 1),
        "/s",
        note=f"p50 {health.latency_ms['p50']:.1f} ms, p99 {health.latency_ms['p99']:.1f} ms",
    )
    share = 100.0 * rate / ceiling if ceiling else None
    run.add(
        section,
        "messages/s as a share of the ceiling",
        None if share is None else round(share, 1),
        "%",
        ">=",
        TARGET_SHARE_OF_CEILING,
    )
    run.add(section, "POST latency p50 (saturated)", lat["p50"], "ms")
    run.add(
        section,
        "POST latency p99 (saturated)",
        lat["p99"],
        "ms",
        note="closed loop: latency = connections / throughput; judged at the target rate below",
    )
    run.add(
        section,
        "POST latency mean / p90 / max",
        lat["mean"],
        "ms",
        note=f"p90 {lat['p90']:.1f} ms, max {lat['max']:.1f} ms",
    )

    measure_paced_posts(run, server, section)

    for result in (post, health):
        cpu = result.cpu_cores
        if cpu:
            run.add(
                section,
                f"server CPU during the {'POST' if result is post else '/health'} run",
                cpu["server"],
                "cores",
                note=(f"PostgreSQL {cpu['database']}, " if "database" in cpu else "")
                + f"wrk {cpu['wrk']}, other processes {cpu['other_processes']} "
                f"(of {os.cpu_count()} cores)",
            )

    # Correctness: what the database holds once the last queued writes are done.
    counts = settled_room_counts(db_url, POST_ROOM, args.agents)
    run.data["post_room"] = counts.as_json()
    check = "1b. Correctness after the POST load (database read directly)"
    created = post.status_expected
    run.add(check, "201 responses counted by wrk", created)
    run.add(
        check,
        "non-2xx responses",
        post.status_other,
        "",
        "==",
        0,
        note=f"health: {health.status_other}",
    )
    run.add(
        check,
        "socket errors + timeouts",
        post.socket_errors + post.errors["timeout"],
        "",
        "==",
        0,
        note=", ".join(f"{k} {v}" for k, v in post.errors.items() if k != "status"),
    )
    run.add(check, "messages in the room", counts.messages)
    run.add(
        check,
        "201 responses missing from the room",
        max(0, created - counts.messages),
        "",
        "==",
        0,
    )
    run.add(
        check,
        "messages stored beyond the 201s",
        counts.messages - created,
        "",
        "<=",
        post.in_flight,
        note=f"target: requests still in flight when wrk stopped ({post.in_flight})",
    )
    run.add(
        check,
        f"messages without exactly {args.agents} deliveries",
        counts.messages_with_wrong_deliveries,
        "",
        "==",
        0,
        note=f"deliveries per message: min {counts.min_deliveries}, max {counts.max_deliveries}",
    )
    run.add(
        check,
        "deliveries in the room",
        counts.deliveries,
        "",
        "==",
        counts.messages * args.agents,
    )


# -- 2. reading a large room --------------------------------------------------------------------


@dataclass
class ReadCase:
    label: str
    params: dict[str, Any]
    target_ms: float
    expected_ids: list[int] | None = None  # exact ids, when known
    word: str | None = None  # every row must contain it
    expected_rows: int = 100


def read_cases(seeded: SeededRoom) -> list[ReadCase]:
    room, first, last = seeded.name, seeded.min_id, seeded.max_id
    return [
        ReadCase(
            "oldest page (limit=100)",
            {"room": room, "limit": 100},
            TARGET_PAGE_P95_MS,
            expected_ids=list(range(first, first + 100)),
        ),
        ReadCase(
            "newest page (before=max+1, limit=100)",
            {"room": room, "limit": 100, "before": last + 1},
            TARGET_PAGE_P95_MS,
            expected_ids=list(range(last - 99, last + 1)),
        ),
        ReadCase(
            f"search rare word q={seeded.rare_word} ({seeded.rare_hits:,} hits)",
            {"room": room, "limit": 100, "q": seeded.rare_word},
            TARGET_SEARCH_P95_MS,
            word=seeded.rare_word,
            expected_rows=min(100, seeded.rare_hits),
        ),
        ReadCase(
            f"search common word q={seeded.common_word} ({seeded.common_hits:,} hits)",
            {"room": room, "limit": 100, "q": seeded.common_word},
            TARGET_SEARCH_P95_MS,
            word=seeded.common_word,
            expected_rows=min(100, seeded.common_hits),
        ),
    ]


def _valid_rows(case: ReadCase, rows: list[dict[str, Any]], room: str) -> int:
    """How many of the returned rows are right (room, ids, search word, ascending order)."""
    ids = [r["id"] for r in rows]
    if ids != sorted(ids) or any(r.get("room") != room for r in rows):
        return 0
    if case.expected_ids is not None and ids != case.expected_ids:
        return 0
    if case.word is not None:
        return sum(case.word in r["content"].lower() for r in rows)
    return len(rows)


def measure_reads(run: Run, server: ServerProcess, seeded: SeededRoom) -> None:
    args = run.args
    cases = read_cases(seeded)
    check = "2a. Read endpoints return the right rows (one request each)"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for case in cases:
            rows = check_page(client, "/api/messages", case.params)
            valid = _valid_rows(case, rows, seeded.name)
            run.add(check, case.label, valid, "rows", "==", case.expected_rows)

    judged_at = args.read_connections[0]
    for n, connections in enumerate(args.read_connections):
        judged = n == 0
        how = "sequential requests" if connections == 1 else "concurrent requests"
        section = (
            f"2{chr(ord('b') + n)}. GET /api/messages on a {seeded.count:,}-message room: "
            f"wrk, {connections} connection{'s' if connections > 1 else ''} ({how}), "
            f"{args.read_duration} s each" + ("" if judged else " (not judged)")
        )
        for case in cases:
            url = str(httpx.URL(f"{server.url}/api/messages", params=case.params))
            result = run.wrk_run(
                url,
                label=f"read c{connections} {case.label}",
                script=GET_SCRIPT,
                connections=connections,
                duration=args.read_duration,
            )
            server.check_alive()
            if result.status_other or result.socket_errors:
                raise MeasurementError(
                    f"{case.label}: {result.status_other} non-200 responses and "
                    f"{result.socket_errors} socket errors; latency would be meaningless"
                )
            lat = result.latency_ms
            run.add(
                section,
                f"{case.label} p95",
                lat["p95"],
                "ms",
                "<=" if judged else None,
                case.target_ms if judged else None,
                note=(
                    f"p50 {lat['p50']:.1f}, p99 {lat['p99']:.1f} ms; "
                    f"{result.rate:,.0f} req/s, {result.responses:,} requests"
                    + ("" if judged else f"; judged at {judged_at} conn: {case.target_ms:g} ms")
                ),
            )


# -- profiling ------------------------------------------------------------------------------


def profile_posts(run: Run, server: ServerProcess) -> None:
    """py-spy under the same POST load (into the scratch room): once sampling every running
    thread (CPU, SQLite's C code included), once only the thread holding the GIL."""
    args = run.args
    folder = args.output.parent
    folder.mkdir(parents=True, exist_ok=True)
    run.data["profile"] = {}
    for mode, gil in (("active", False), ("gil", True)):
        output = folder / f"profile-{mode}.txt"
        errors: list[BaseException] = []

        def load(mode: str = mode, errors: list[BaseException] = errors) -> None:
            try:
                run.wrk_run(
                    f"{server.url}/api/messages",
                    label=f"profile post ({mode})",
                    script=POST_SCRIPT,
                    script_args=(SCRATCH_ROOM, SENDER),
                    connections=args.connections,
                    duration=args.profile_duration + 2,
                )
            except BaseException as exc:  # reported from the main thread
                errors.append(exc)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(1)
        recorder = start_recording(server.pid, output, args.profile_duration, gil=gil)
        finish_recording(recorder, output)
        loader.join()
        if errors:
            raise errors[0]
        profile = parse(output, duration=args.profile_duration)
        run.data["profile"][mode] = {"file": str(output), **profile.as_json()}
        title = {
            "active": "py-spy, every running thread (Python and C code, e.g. SQLite)",
            "gil": "py-spy --gil, only the thread holding the GIL (Python work)",
        }[mode]
        run.notes.append(format_profile(profile, 20, title) + f"\n(raw stacks: {output})")


def conditions(run: Run) -> None:
    """How much CPU other processes took while the figures were measured."""
    measured = {k: v for k, v in run.wrk.items() if not k.startswith(("warmup", "profile"))}
    others = [v["cpu_cores"]["other_processes"] for v in measured.values() if v["cpu_cores"]]
    if not others:
        return
    worst = max(others)
    run.add(
        "4. Measurement conditions",
        "CPU used by other processes during the runs (max)",
        worst,
        "cores",
        note=(
            f"of {os.cpu_count()} cores; mean {sum(others) / len(others):.2f}"
            + (
                ": the machine was shared, figures are low and noisy"
                if worst > NOISY_OTHER_CORES
                else ": quiet"
            )
        ),
    )


# -- main -----------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return ""
    return out.stdout.strip()


def meta(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        wrk_version = (
            (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
        )
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pal_version": pal.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "src_changes_not_committed": len(_git("status", "--porcelain", "--", "src").splitlines()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wrk": wrk_version,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def check_quiet(run: Run, seconds: float = 1.0) -> None:
    """Warn when other work keeps the CPUs busy: the server and wrk need all of them."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return
    busy = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    run.data["cpu_busy_before_start_pct"] = round(busy, 1)
    if busy > BUSY_CPU_PCT:
        message = (
            f"warning: the machine is busy before the benchmark starts ({busy:.0f} % of "
            f"{os.cpu_count()} CPUs in use by other processes): they compete with the server "
            "and wrk, so the figures will be low and noisy"
        )
        print(message, flush=True)
        run.notes.append(message)


def bench(run: Run, stack: ExitStack) -> None:
    args = run.args
    ensure_wrk()
    check_quiet(run)
    workdir = Path(tempfile.mkdtemp(prefix="pal-bench-"))
    if args.keep:
        print(f"keeping {workdir} (PAL_HOME and server.log)")
    else:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    db_arg = stack.enter_context(scratch_postgres(args.db)) if args.db else None

    home = workdir / "home"
    env = server_env(home, free_port(), db_arg)
    db_url = resolved_db_url(env)
    dialect = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    run.data["database"] = dialect
    run.database_process = "postgres" if dialect == "postgresql" else None
    ensure_home(home)

    print(
        f"seeding {args.messages:,} messages into room {HISTORY_ROOM!r} ({dialect})...", flush=True
    )
    seeded = seed_room(db_url, HISTORY_ROOM, args.messages)
    run.data["seed"] = seeded.as_json()
    run.add(
        "0. Setup",
        f"seeded messages ({dialect}, store executemany)",
        seeded.count,
        note=f"{seeded.seconds:.1f} s, {seeded.count / seeded.seconds:,.0f} messages/s",
    )

    print("starting python -m pal server...", flush=True)
    server = start_server(env, workdir / "server.log")
    stack.callback(server.stop)
    run.server_pid = server.pid
    with httpx.Client(base_url=server.url, timeout=30) as client:
        create_agents_and_rooms(client, args.agents)
    print(f"server {server.url} (pid {server.pid}); warming up...", flush=True)
    warm_up(run, server)

    print(f"measuring POST /api/messages and GET /health ({args.duration} s each)...", flush=True)
    measure_posts(run, server, db_url)
    print("measuring reads on the seeded room...", flush=True)
    measure_reads(run, server, seeded)
    if args.profile:
        print(f"profiling the POST load with py-spy ({args.profile_duration} s x 2)...", flush=True)
        profile_posts(run, server)

    stopped_in = server.stop()
    code = server.proc.returncode
    run.add(
        "3. Server",
        "seconds to exit after SIGTERM",
        None if stopped_in is None else round(stopped_in, 2),
        "s",
        "<=",
        STOP_TIMEOUT_S,
        note=f"exit code {code}"
        + (" (uvicorn re-raises SIGTERM after a graceful shutdown)" if code == -15 else ""),
    )
    run.add("3. Server", "tracebacks in the server log", server.log_tracebacks(), "", "==", 0)
    conditions(run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args)
    results: dict[str, Any] = {"meta": meta(args)}
    status = 0
    try:
        with ExitStack() as stack:
            bench(run, stack)
    except MeasurementError as exc:
        results["error"] = str(exc)
        status = 2
    except Exception as exc:
        traceback.print_exc()
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 2
    except KeyboardInterrupt:
        results["error"] = "interrupted"
        status = 130

    print(format_table(run.figures))
    for note in run.notes:
        print("\n" + note)
    results.update(
        figures=[f.as_json() for f in run.figures],
        targets_met=sum(f.passed is True for f in run.figures),
        targets_failed=sum(f.passed is False for f in run.figures),
        wrk=run.wrk,
        **run.data,
    )
    write_json(args.output, results)
    print(f"\nresults: {args.output}", flush=True)
    if status == 2:
        print(f"\nerror: a measurement could not be taken: {results['error']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
