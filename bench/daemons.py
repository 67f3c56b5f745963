"""pal daemon benchmarks: post-to-claim latency, and many daemons on one server.

    .venv/bin/python bench/daemons.py                 # SQLite under a fresh temporary PAL_HOME
    .venv/bin/python bench/daemons.py --messages 100 --daemons 50 --idle 10   # quicker

1. **Post to claim, with the socket.** A real ``pal daemon --dry-run`` serves one agent. The
   benchmark posts ``--messages`` messages mentioning it, one every ``--gap`` ms, and reads each
   delivery's ``claimed_at`` back: the latency is ``claimed_at - created_at`` (both stamped by
   the server, so no clock skew). The ceiling, measured in the same run: the round trip of a
   ``GET /health``.
2. **Post to claim, socket blocked.** A second daemon reaches the server through a proxy that
   refuses WebSocket upgrades (as a corporate proxy might), so only its heartbeat polling
   (``--blocked-interval`` ms) finds work. Target: at most the interval plus 1 s.
3. **Many daemons.** ``--daemons`` computers are provisioned; each connects and keeps the
   daemon protocol going from this process (socket open, a heartbeat every ``--heartbeat`` ms
   with jitter) for ``--idle`` seconds. Measured: heartbeat errors, the server's memory (RSS)
   and CPU while they idle. Then the real daemon of step 1, idle, is measured: its RSS.

Prints a table and writes bench/results/daemons.json. Exit status as ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

from load import MeasurementError
from report import Figure, run_and_report
from server import ServerProcess, free_port, server_env, start_server

HERE = Path(__file__).resolve().parent
AGENT = "bot"
TARGET_SOCKET_P50_MS = 20.0
TARGET_SOCKET_P99_MS = 100.0
TARGET_DAEMON_RSS_MB = 80.0
REFUSAL = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=500, help="messages in step 1 (500)")
    p.add_argument("--gap", type=float, default=20, help="ms between posts in step 1 (20)")
    p.add_argument("--blocked-messages", type=int, default=40, help="messages in step 2 (40)")
    p.add_argument("--blocked-interval", type=int, default=2000, help="daemon --interval, step 2")
    p.add_argument("--daemons", type=int, default=200, help="daemons in step 3 (200)")
    p.add_argument("--heartbeat", type=int, default=5000, help="their heartbeat, ms (5000)")
    p.add_argument("--idle", type=float, default=30, help="seconds they idle (30)")
    p.add_argument("--output", type=Path, default=HERE / "results" / "daemons.json")
    return p.parse_args(argv)


# -- processes -------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise MeasurementError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    """A real ``python -m pal daemon --dry-run`` process."""

    def __init__(self, home: Path, server_url: str, api_key: str, interval: int, log: Path):
        self.local_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
        env.update(PAL_HOME=str(home), PAL_API_KEY=api_key, PAL_LOG_LEVEL="warning")
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pal",
                    "daemon",
                    "--server",
                    server_url,
                    "--dry-run",
                    "--interval",
                    str(interval),
                    "--local-port",
                    str(self.local_port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise MeasurementError(f"{what} did not happen within {timeout:.0f} s")


# -- the proxy that blocks WebSocket upgrades ------------------------------------------------


class NoSocketProxy:
    """Forwards HTTP to ``target_port``; answers 403 to any WebSocket upgrade."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = asyncio.Event()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ConnectionError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        if b"upgrade: websocket" in head.lower():
            self.refused += 1
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(head)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> None:
        import threading

        async def serve() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=self._loop.run_until_complete, args=(serve(),), daemon=True).start()
        wait_for(self._ready.is_set, 10, "the proxy start")


# -- steps -----------------------------------------------------------------------------------


def provision(client: httpx.Client, name: str) -> dict[str, Any]:
    r = client.post("/api/computers/provision", json={"name": name})
    r.raise_for_status()
    return dict(r.json())


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def served(client: httpx.Client, computer_id: str) -> bool:
    r = client.get(f"/api/computers/{computer_id}")
    return r.status_code == 200 and r.json()["computer"]["status"] == "online"


def post_to_claim(
    client: httpx.Client, agent: str, count: int, gap_s: float, jitter: bool = False
) -> list[float]:
    """Post ``count`` messages mentioning ``agent``; the claim latency of each, in ms."""
    ids = []
    for i in range(count):
        r = client.post(
            "/api/messages",
            json={"room": "general", "sender": "alice", "mentions": [agent], "content": f"m{i}"},
        )
        r.raise_for_status()
        ids.append(r.json()["message"]["id"])
        time.sleep(random.uniform(0, 2 * gap_s) if jitter else gap_s)

    def claimed() -> list[dict[str, Any]] | None:
        r = client.get("/api/deliveries", params={"agent": agent, "limit": 1000})
        items = [d for d in r.json()["deliveries"] if d["message_id"] in set(ids)]
        done = [d for d in items if d["claimed_at"] is not None]
        return done if len(done) == count else None

    deliveries = wait_for(claimed, 60, f"the claim of all {count} deliveries for {agent}")
    return [
        (
            datetime.fromisoformat(d["claimed_at"]) - datetime.fromisoformat(d["created_at"])
        ).total_seconds()
        * 1000
        for d in deliveries
    ]


def health_round_trip_ms(client: httpx.Client, n: int = 200) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.get("/health").raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def many_daemons(
    url: str, keys: list[tuple[str, str]], heartbeat_ms: int, idle_s: float, server_pid: int
) -> dict[str, Any]:
    """Keep ``keys`` (computer id, api key) connected: a socket each and jittered heartbeats."""
    errors: list[str] = []
    beats = 0
    ws_url = url.replace("http", "ws", 1)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def one(computer_id: str, key: str) -> None:
            nonlocal beats
            headers = {"Authorization": f"Bearer {key}"}
            r = await http.post("/api/computers/connect", json={}, headers=headers)
            if r.status_code != 200:
                errors.append(f"connect {r.status_code}: {r.text[:200]}")
                return
            daemon_id = r.json()["daemon_id"]
            async with websockets.connect(
                f"{ws_url}/api/daemon/ws?daemon_id={daemon_id}", additional_headers=headers
            ) as ws:
                await ws.recv()  # hello
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            stop.wait(), random.uniform(0.8, 1.0) * heartbeat_ms / 1000
                        )
                    if stop.is_set():
                        break
                    r = await http.post(
                        f"/api/computers/{computer_id}/heartbeat",
                        json={"daemon_id": daemon_id, "agents": []},
                        headers=headers,
                    )
                    if r.status_code != 200:
                        errors.append(f"heartbeat {r.status_code}: {r.text[:200]}")
                    beats += 1

        tasks = [asyncio.create_task(one(c, k)) for c, k in keys]
        await asyncio.sleep(heartbeat_ms / 1000 + 2)  # everyone connected and beating
        rss_before = rss_mb(server_pid)
        cpu0, t0, beats0 = cpu_s(server_pid), time.monotonic(), beats
        await asyncio.sleep(idle_s)
        cpu1, t1, beats1 = cpu_s(server_pid), time.monotonic(), beats
        rss_after = rss_mb(server_pid)
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return {
        "rss_mb": max(rss_before, rss_after),
        "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
        "heartbeats_per_s": (beats1 - beats0) / (t1 - t0),
        "errors": errors,
    }


def bench(args: argparse.Namespace, figures: list[Figure], stack: ExitStack) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pal-bench-daemons-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    home = workdir / "home"
    env = server_env(home, free_port(), None)
    server: ServerProcess = start_server(env, workdir / "server.log")
    stack.callback(server.stop)
    client = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))

    print("1. post to claim with the socket...", flush=True)
    first = provision(client, "bench-socket")
    computer_id = first["computer"]["id"]
    client.post(
        "/api/agents/onboard",
        json={"agent_key": AGENT, "display_name": "Bot", "computer_id": computer_id},
    ).raise_for_status()
    daemon = Daemon(workdir / "d1", server.url, first["api_key"], 5000, workdir / "daemon1.log")
    stack.callback(daemon.stop)
    wait_for(lambda: served(client, computer_id), 30, "the daemon's connect")
    post_to_claim(client, AGENT, 20, 0.01)  # warm-up
    ceiling = health_round_trip_ms(client)
    latencies = post_to_claim(client, AGENT, args.messages, args.gap / 1000)
    section = "1. Post to claim, socket (one daemon)"
    figures.append(Figure(section, "GET /health round trip p50 (ceiling)", round(ceiling, 2), "ms"))
    figures.append(
        Figure(
            section,
            "claim latency p50",
            round(statistics.median(latencies), 1),
            "ms",
            "<=",
            TARGET_SOCKET_P50_MS,
            note=f"{len(latencies)} messages, one every {args.gap:g} ms",
        )
    )
    figures.append(
        Figure(
            section,
            "claim latency p99",
            round(percentile(latencies, 99), 1),
            "ms",
            "<=",
            TARGET_SOCKET_P99_MS,
        )
    )
    figures.append(Figure(section, "claim latency max", round(max(latencies), 1), "ms"))

    print("2. post to claim with the socket blocked...", flush=True)
    proxy = NoSocketProxy(int(server.url.rsplit(":", 1)[1]))
    proxy.start()
    second = provision(client, "bench-blocked")
    blocked_agent = "polled"
    client.post(
        "/api/agents/onboard",
        json={
            "agent_key": blocked_agent,
            "display_name": "Polled",
            "computer_id": second["computer"]["id"],
        },
    ).raise_for_status()
    polled = Daemon(
        workdir / "d2",
        f"http://127.0.0.1:{proxy.port}",
        second["api_key"],
        args.blocked_interval,
        workdir / "daemon2.log",
    )
    stack.callback(polled.stop)
    wait_for(lambda: served(client, second["computer"]["id"]), 30, "the polled daemon's connect")
    latencies = post_to_claim(
        client, blocked_agent, args.blocked_messages, args.blocked_interval / 1000 / 4, jitter=True
    )
    section = f"2. Post to claim, socket blocked (--interval {args.blocked_interval} ms)"
    figures.append(
        Figure(
            section,
            "claim latency max",
            round(max(latencies), 0),
            "ms",
            "<=",
            args.blocked_interval + 1000,
            note=f"{len(latencies)} messages; {proxy.refused} socket upgrades refused",
        )
    )
    figures.append(Figure(section, "claim latency p50", round(statistics.median(latencies)), "ms"))
    polled.stop()

    print(f"3. {args.daemons} daemons idle for {args.idle:g} s...", flush=True)
    rss_idle_server = rss_mb(server.pid)
    keys = []
    for i in range(args.daemons):
        p = provision(client, f"sim-{i}")
        keys.append((p["computer"]["id"], p["api_key"]))
    many = asyncio.run(many_daemons(server.url, keys, args.heartbeat, args.idle, server.pid))
    section = f"3. {args.daemons} daemons on one server (heartbeat {args.heartbeat} ms)"
    figures.append(Figure(section, "server RSS, no daemons", round(rss_idle_server), "MB"))
    figures.append(Figure(section, "server RSS, daemons connected", round(many["rss_mb"]), "MB"))
    figures.append(
        Figure(section, "server CPU while they idle", round(many["cpu_cores"], 3), "cores")
    )
    figures.append(Figure(section, "heartbeats handled", round(many["heartbeats_per_s"], 1), "/s"))
    beats = many["heartbeats_per_s"]
    figures.append(
        Figure(
            section,
            "server CPU per heartbeat",
            round(1000 * many["cpu_cores"] / beats, 2) if beats else None,
            "ms",
            note="idle CPU / heartbeats: includes socket pings and the liveness sweep",
        )
    )
    figures.append(
        Figure(
            section,
            "heartbeat and socket errors",
            len(many["errors"]),
            "",
            "==",
            0,
            note="; ".join(many["errors"][:3]),
        )
    )
    daemon_rss = rss_mb(daemon.proc.pid)
    figures.append(
        Figure(
            "4. One daemon",
            "idle daemon RSS (step 1's, one agent, local API up)",
            round(daemon_rss, 1),
            "MB",
            "<=",
            TARGET_DAEMON_RSS_MB,
        )
    )
    tracebacks = sum(
        p.read_text(errors="replace").count("Traceback")
        for p in (server.log, daemon.log, polled.log)
    )
    figures.append(Figure("4. One daemon", "tracebacks in the logs", tracebacks, "", "==", 0))


def main(argv: list[str] | None = None) -> int:
    return run_and_report(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
