"""pal Lark benchmark: event received to ack sent, at 50 events/s over 20 bots.

    .venv/bin/python bench/lark.py                   # 20 bots, 50 events/s for 10 s
    .venv/bin/python bench/lark.py --duration 3      # quicker

The fake Lark Open Platform (tests/fakes/lark_platform.py) runs as its own process, as Lark
is another machine; this process holds ``--bots`` :class:`pal.lark.connection.LarkConnection`
on one event loop, as the server does. Then:

1. **Ceiling.** A bare WebSocket echo between this loop and another process on loopback:
   a binary message of the size of an event frame, sent at the same rate; its round trip is
   the floor of what any client can do on this machine (p50, p99).
2. **Event to ack.** The fake injects ``--rate`` messages per second for ``--duration``
   seconds (an ``im.message.receive_v1`` each, to the bots in turn; ``POST /_fake/load``),
   and stamps the time the event frame left and the time its ack came back: that round trip
   (fake → client → ack → fake) bounds "event received to ack sent" from above. The client's
   own ``biz_rt`` (final frame read to ack written, in ms) is shown too. Every event must be
   acked exactly once and reach its bot's handler (``--handler-ms`` makes the handler slow:
   acks must not wait for it).

Prints a table and writes bench/results/lark.json. Exit status: 0 when every target is met,
1 when one is missed, 2 when a measurement could not be taken.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from daemons import percentile
from load import MeasurementError
from report import Figure, run_and_report
from server import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_P99_MS = 200.0
SECRET = "bench-secret"
ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, ping_interval=None):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bots", type=int, default=20, help="connections, one per app (20)")
    p.add_argument("--rate", type=float, default=50, help="events per second, all bots (50)")
    p.add_argument("--duration", type=float, default=10, help="seconds of load (10)")
    p.add_argument("--handler-ms", type=float, default=0, help="each event handler sleeps (0)")
    p.add_argument("--output", type=Path, default=HERE / "results" / "lark.json")
    return p.parse_args(argv)


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def start_process(argv: list[str], log: Path, ready: Any, what: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise MeasurementError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def echo_round_trips(port: int, count: int, rate: float, size: int) -> list[float]:
    """Round trips (s) of ``count`` binary messages of ``size`` bytes, paced at ``rate``."""
    from websockets.asyncio.client import connect

    payload = b"x" * size
    times = []
    async with connect(
        f"ws://127.0.0.1:{port}/", proxy=None, compression=None, ping_interval=None
    ) as ws:
        started = time.monotonic()
        for k in range(count):
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            times.append(time.perf_counter() - sent)
    return times


async def event_to_ack(args: argparse.Namespace, origin: str) -> dict[str, Any]:
    """Connect the bots, run the load, return what the fake measured and what bots got."""
    from pal.lark.connection import LarkConnection

    app_ids = [f"cli_bench_{i:02d}" for i in range(args.bots)]
    received = dict.fromkeys(app_ids, 0)

    def handler(app_id: str) -> Any:
        async def on_event(event: dict[str, Any]) -> None:
            if args.handler_ms:
                await asyncio.sleep(args.handler_ms / 1000)
            received[app_id] += 1

        return on_event

    async with httpx.AsyncClient(base_url=origin, timeout=30) as http:

        async def control(method: str, name: str, body: Any = None) -> dict[str, Any]:
            r = await http.request(method, f"/_fake/{name}", json=body)
            if r.status_code != 200:
                raise MeasurementError(f"/_fake/{name} answered {r.status_code}: {r.text[:300]}")
            return dict(r.json())

        connections = [
            LarkConnection(SimpleNamespace(app_id=a, app_secret=SECRET, domain=origin), handler(a))
            for a in app_ids
        ]
        for connection in connections:
            connection.start()
        try:
            deadline = time.monotonic() + 60
            while not all(c.status()["state"] == "connected" for c in connections):
                failed = [c.status()["error"] for c in connections if c.status()["error"]]
                if time.monotonic() > deadline or any(
                    c.status()["state"] == "failed" for c in connections
                ):
                    raise MeasurementError(f"the bots did not connect: {failed[:3]}")
                await asyncio.sleep(0.05)
            # Warm-up: one event per bot, then forget the measurements.
            await control("POST", "load", {"rate": 100, "duration": args.bots / 100})
            await wait_acked(control, args.bots, 30)
            await wait_handled(received, args.bots, 30)
            await control("POST", "latencies/reset")
            for app_id in app_ids:
                received[app_id] = 0

            expected = int(args.rate * args.duration)
            started = time.monotonic()
            await control("POST", "load", {"rate": args.rate, "duration": args.duration})
            result = await wait_acked(control, expected, args.duration + 30)
            elapsed = time.monotonic() - started
            await wait_handled(received, expected, 30 + expected * args.handler_ms / 1000)
            result.update(
                expected=expected,
                elapsed=elapsed,
                handled=sum(received.values()),
                every_bot=all(received.values()),
                reconnects=sum(c.status()["reconnects"] for c in connections),
            )
            return result
        finally:
            await asyncio.gather(*(c.stop() for c in connections))


async def wait_handled(received: dict[str, int], expected: int, timeout: float) -> None:
    """Until the handlers have seen ``expected`` events (or the timeout)."""
    deadline = time.monotonic() + timeout
    while sum(received.values()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def wait_acked(control: Any, expected: int, timeout: float) -> dict[str, Any]:
    """The fake's latencies once ``expected`` events were pushed and acked (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await control("GET", "latencies")
        if state["pushed"] >= expected and state["acked"] >= state["pushed"]:
            return dict(state)
        if time.monotonic() > deadline:
            return dict(state)
        await asyncio.sleep(0.1)


def bench(args: argparse.Namespace, figures: list[Figure], stack: ExitStack) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pal-bench-lark-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)

    echo_port = free_port()
    echo = start_process(
        [sys.executable, "-c", ECHO_SERVER, str(echo_port)],
        workdir / "echo.log",
        lambda: b"ready" in (workdir / "echo.log").read_bytes(),
        "the echo server",
    )
    stack.callback(stop, echo)
    apps = [f"--app=cli_bench_{i:02d}:{SECRET}" for i in range(args.bots)]
    fake = start_process(
        [sys.executable, "-m", "tests.fakes.lark_platform", "--port", str(free_port())]
        + ["--state-dir", str(workdir), "--ping-interval", "30", *apps],
        workdir / "fake.log",
        lambda: (workdir / "origin").exists(),
        "the fake Lark platform",
    )
    stack.callback(stop, fake)
    origin = (workdir / "origin").read_text()

    print(f"1. ceiling: WebSocket echo at {args.rate:g}/s...", flush=True)
    count = max(100, int(args.rate * 4))
    echo_times = ms(asyncio.run(echo_round_trips(echo_port, count, args.rate, 900)))
    section = f"1. Ceiling: bare WebSocket echo to another process ({count}, {args.rate:g}/s)"
    figures.append(Figure(section, "round trip p50", round(statistics.median(echo_times), 2), "ms"))
    figures.append(Figure(section, "round trip p99", round(percentile(echo_times, 99), 2), "ms"))

    print(
        f"2. event to ack: {args.bots} bots, {args.rate:g} events/s for {args.duration:g} s...",
        flush=True,
    )
    result = asyncio.run(event_to_ack(args, origin))
    latencies = ms(result["latencies"])
    if not latencies:
        raise MeasurementError("no event was acked")
    section = (
        f"2. Event sent -> ack received, at the fake ({args.bots} bots, {args.rate:g}/s, "
        f"{args.duration:g} s)"
    )
    achieved = result["pushed"] / result["elapsed"] if result["elapsed"] else None
    figures += [
        Figure(section, "events pushed", result["pushed"], note=f"expected {result['expected']}"),
        Figure(section, "events/s achieved", achieved and round(achieved, 1), "/s"),
        Figure(
            section, "events never acked", result["pushed"] - result["acked"], op="==", target=0
        ),
        Figure(
            section,
            "acks beyond one per event",
            len(result["biz_rt_ms"]) - result["acked"],
            op="==",
            target=0,
        ),
        Figure(
            section,
            "events not handed to their bot",
            result["expected"] - result["handled"],
            op="==",
            target=0,
        ),
        Figure(section, "reconnects during the run", result["reconnects"], op="==", target=0),
        Figure(section, "p50", round(statistics.median(latencies), 2), "ms"),
        Figure(section, "p99", round(percentile(latencies, 99), 2), "ms", "<=", TARGET_P99_MS),
        Figure(section, "max", round(max(latencies), 2), "ms"),
        Figure(
            section,
            "p99 over the echo ceiling p99",
            round(percentile(latencies, 99) / max(percentile(echo_times, 99), 1e-6), 1),
            "x",
        ),
        Figure(
            section,
            "client biz_rt p99 (frame read -> ack written)",
            percentile([float(v) for v in result["biz_rt_ms"]], 99),
            "ms",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return run_and_report(bench, parse_args(argv), fail_on_miss=True)


if __name__ == "__main__":
    sys.exit(main())
