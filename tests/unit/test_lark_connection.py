"""LarkConnection against the fake Open Platform on the test's loop: connect and ping, acks
at once, reassembly, reconnects (closed and half-open connections), fatal and retryable
errors, stop, and twenty bots on one loop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from pal.lark.connection import LarkConnection
from tests.fakes.lark_platform import FakeLarkPlatform, eventually

SECRET = "s3cr3t-VALUE-never-shown"


@pytest.fixture
async def fake():
    async with FakeLarkPlatform(ping_interval=1, reconnect_interval=1) as fake:
        fake.add_app("cli_a", SECRET)
        yield fake


class Bots:
    """Makes connections to the fake, records their events, stops them all at the end."""

    def __init__(self, fake: FakeLarkPlatform) -> None:
        self.fake = fake
        self.connections: list[LarkConnection] = []
        self.events: dict[str, list[dict[str, Any]]] = {}

    def connect(
        self, app_id: str = "cli_a", secret: str = SECRET, handler: Any = None, **kwargs: Any
    ) -> LarkConnection:
        events = self.events.setdefault(app_id, [])

        async def record(event: dict[str, Any]) -> None:
            events.append(event)

        bot = SimpleNamespace(app_id=app_id, app_secret=secret, domain=self.fake.origin)
        kwargs.setdefault("jitter", lambda: 0.0)
        kwargs.setdefault("backoff_base", 0.02)
        connection = LarkConnection(bot, handler or record, **kwargs)
        connection.start()
        self.connections.append(connection)
        return connection

    async def connected(self, app_id: str = "cli_a", **kwargs: Any) -> LarkConnection:
        connection = self.connect(app_id, **kwargs)
        await eventually(lambda: connection.status()["state"] == "connected")
        return connection

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connections))


@pytest.fixture
async def bots(fake):
    bots = Bots(fake)
    yield bots
    await bots.stop()


def lark_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lark-")]


def text_of(event: dict[str, Any]) -> str:
    return json.loads(event["event"]["message"]["content"])["text"]


async def test_connects_and_pings_at_once(fake, bots):
    fake.client_config["PingInterval"] = 30
    connection = await bots.connected()
    [conn] = fake.live_connections("cli_a")
    await eventually(lambda: conn.pings == 1, timeout=3)  # at once, not after 30 s
    assert connection.config["PingInterval"] == 30
    status = connection.status()
    assert status["error"] is None and status["connected_at"] is not None
    await eventually(lambda: connection.status()["last_frame_at"] is not None)  # the pong


async def test_client_config_of_a_pong_replaces_the_live_one(fake, bots):
    connection = await bots.connected()
    [conn] = fake.live_connections("cli_a")
    assert connection.config["PingInterval"] == 1  # from discovery
    fake.client_config = {**fake.client_config, "PingInterval": 0.1}  # in the next pong
    await eventually(lambda: connection.config["PingInterval"] == 0.1, timeout=3)
    pings = conn.pings
    await eventually(lambda: conn.pings >= pings + 5, timeout=2)


async def test_event_is_acked_at_once_while_a_slow_handler_still_runs(fake, bots):
    release = asyncio.Event()
    handled: list[str] = []

    async def slow(event: dict[str, Any]) -> None:
        await release.wait()
        handled.append(text_of(event))

    connection = await bots.connected(handler=slow)
    started = time.monotonic()
    first = await fake.inject_message("first", apps=["cli_a"])
    second = await fake.inject_message("second", apps=["cli_a"])
    await eventually(lambda: len(fake.acks) == 2, timeout=1)
    assert time.monotonic() - started < 1  # the platform re-pushes after 3 s
    assert handled == []  # the handler has not finished the first one
    pushed = [first["pushed"]["cli_a"], second["pushed"]["cli_a"]]
    assert [a.message_id for a in fake.acks] == pushed
    assert all(a.payload == {"code": 200} and "biz_rt" in a.headers for a in fake.acks)
    assert connection.status()["events_received"] == 2
    release.set()
    await eventually(lambda: handled == ["first", "second"])  # in order, one at a time


async def test_event_reaches_on_event_whole(fake, bots):
    await bots.connected()
    injected = await fake.inject_message("hello", apps=["cli_a"], chat_type="p2p")
    await eventually(lambda: bots.events["cli_a"])
    assert bots.events["cli_a"] == [injected["events"]["cli_a"]]


async def test_split_event_is_reassembled_and_acked_once_for_the_last_fragment(fake, bots):
    await bots.connected()
    text = "long " * 2000
    injected = await fake.inject_message(text, apps=["cli_a"], parts=3)
    await eventually(lambda: bots.events["cli_a"])
    assert text_of(bots.events["cli_a"][0]) == text
    [ack] = fake.acks
    assert ack.message_id == injected["pushed"]["cli_a"]
    assert (ack.headers["sum"], ack.headers["seq"]) == ("3", "2")


async def test_card_frames_are_ignored_without_ack(fake, bots):
    connection = await bots.connected()
    await fake.push("cli_a", {"schema": "2.0", "header": {"event_type": "card"}}, type="card")
    injected = await fake.inject_message("after the card", apps=["cli_a"])
    await eventually(lambda: bots.events["cli_a"])
    assert [a.message_id for a in fake.acks] == [injected["pushed"]["cli_a"]]
    assert connection.status()["events_received"] == 1


async def test_event_that_is_not_json_is_answered_500_and_not_handed_on(fake, bots):
    await bots.connected()
    [conn] = fake.live_connections("cli_a")
    from pal.lark import frames

    [frame] = frames.data_frames(b"{not json", message_id="bad", trace_id="t")
    await conn.send(frames.encode(frame))
    await eventually(lambda: fake.acks)
    assert fake.acks[0].payload == {"code": 500}
    assert bots.events["cli_a"] == []


async def test_closed_connection_reconnects_with_a_new_discovery(fake, bots):
    connection = await bots.connected()
    assert await fake.drop("cli_a") == 1
    await eventually(lambda: connection.status()["reconnects"] == 1)
    assert connection.status()["state"] == "connected"
    assert fake.discoveries == ["cli_a", "cli_a"]  # each connection uses a fresh URL
    await fake.inject_message("after the reconnect", apps=["cli_a"])
    await eventually(lambda: bots.events["cli_a"])


async def test_silent_half_open_connection_is_replaced_by_the_watchdog(fake, bots, caplog):
    caplog.set_level(logging.WARNING, logger="pal.lark.connection")
    connection = await bots.connected(grace=0.3)
    [silent] = fake.go_silent("cli_a")  # TCP up, no pongs, no WebSocket pongs either
    started = time.monotonic()
    await eventually(lambda: connection.status()["reconnects"] == 1, timeout=5)
    assert time.monotonic() - started < 3  # PingInterval 1 + grace 0.3, plus the reconnect
    assert [r.action for r in caplog.records] == ["lark_watchdog"]
    assert silent.silent and len(fake.live_connections("cli_a")) >= 1
    await fake.inject_message("after the silence", apps=["cli_a"])
    await eventually(lambda: bots.events["cli_a"])


async def test_wrong_secret_fails_at_once_with_a_clear_error(fake, bots):
    connection = bots.connect(secret="wrong-" + SECRET)
    await eventually(lambda: connection.status()["state"] == "failed")
    error = connection.status()["error"]
    assert error.startswith("Lark refused the long connection (code 10014: app secret invalid)")
    assert "App Secret" in error and SECRET not in error
    assert connection._tasks[0].done()  # no retry loop
    assert fake.requests.count(("POST", "/callback/ws/endpoint")) == 1


@pytest.mark.parametrize(
    ("status", "auth", "problem"),
    [
        (403, None, "Lark refused the WebSocket (403: refused by the test)"),
        (514, 1000040350, "too many connections for app cli_a (Lark allows 50"),
    ],
)
async def test_fatal_handshake_refusals_fail_the_bot(fake, bots, status, auth, problem):
    fake.handshake_failures.append((status, auth))
    connection = bots.connect()
    await eventually(lambda: connection.status()["state"] == "failed")
    assert problem in connection.status()["error"]
    assert connection._tasks[0].done() and fake.discoveries == ["cli_a"]


async def test_connection_limit_of_the_app_is_fatal(fake, bots):
    fake.max_connections = 1
    await bots.connected()
    second = bots.connect()
    await eventually(lambda: second.status()["state"] == "failed")
    assert "too many connections" in second.status()["error"]


@pytest.mark.parametrize(
    "failures",
    [
        [("code", 1), ("code", 1000040343)],  # busy, internal error
        [("http", 503), ("http", 500)],
    ],
)
async def test_retryable_discovery_failures_are_retried(fake, bots, failures):
    fake.discovery_failures.extend(failures)
    connection = bots.connect()
    await eventually(lambda: connection.status()["state"] == "connected")
    assert fake.requests.count(("POST", "/callback/ws/endpoint")) == 3
    assert connection.status()["reconnects"] == 0


async def test_other_handshake_refusals_are_retried(fake, bots):
    fake.handshake_failures.append((514, 1))
    fake.handshake_failures.append((500, None))
    await bots.connected()
    assert fake.discoveries == ["cli_a"] * 3


async def test_reconnect_count_exhausted_fails_the_bot(fake, bots):
    fake.client_config["ReconnectCount"] = 2
    connection = await bots.connected()
    fake.discovery_failures.extend([("http", 503)] * 5)
    await fake.drop("cli_a")
    await eventually(lambda: connection.status()["state"] == "failed")
    assert connection.status()["error"] == (
        "no connection after 3 attempts: endpoint discovery answered HTTP 503"
    )


async def test_unreachable_platform_keeps_retrying_as_connecting(bots):
    bots.fake.discovery_failures.extend([("http", 502)] * 1000)
    connection = bots.connect()
    await eventually(lambda: bots.fake.requests.count(("POST", "/callback/ws/endpoint")) >= 3)
    assert connection.status()["state"] == "connecting"
    assert connection.status()["error"] == "endpoint discovery answered HTTP 502"


async def test_stop_is_prompt_with_a_stuck_handler_and_leaves_no_tasks(fake, bots):
    async def stuck(event: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    connection = await bots.connected(handler=stuck, stop_timeout=0.2)
    await fake.inject_message("never handled", apps=["cli_a"])
    await eventually(lambda: fake.acks)
    started = time.monotonic()
    await connection.stop()
    assert time.monotonic() - started < 1.5
    assert connection.status()["state"] == "stopped"
    assert lark_tasks() == []
    await eventually(lambda: not fake.live_connections("cli_a"))


async def test_stop_while_still_connecting(bots):
    bots.fake.discovery_failures.extend([("http", 503)] * 1000)
    connection = bots.connect()
    await eventually(lambda: bots.fake.requests)
    await connection.stop()
    assert connection.status()["state"] == "stopped" and lark_tasks() == []


async def test_twenty_bots_on_one_loop_each_get_their_own_events(fake, bots):
    app_ids = [f"cli_{i:02d}" for i in range(20)]
    for app_id in app_ids:
        fake.add_app(app_id, SECRET)
        bots.connect(app_id)
    await eventually(lambda: len(fake.live_connections()) == 20, timeout=10)
    for app_id in app_ids:
        await fake.inject_message(f"to {app_id}", apps=[app_id], sender=f"user of {app_id}")
    await eventually(lambda: all(bots.events.get(a) for a in app_ids), timeout=10)
    for app_id in app_ids:
        [event] = bots.events[app_id]
        assert event["header"]["app_id"] == app_id and text_of(event) == f"to {app_id}"
    assert len(fake.acks) == 20
    assert {c.status()["state"] for c in bots.connections} == {"connected"}


async def test_group_message_reaches_every_bot_with_its_own_ids(fake, bots):
    fake.add_app("cli_b", SECRET)
    await bots.connected("cli_a")
    await bots.connected("cli_b")
    injected = await fake.inject_message(
        "hi both", apps=["cli_a", "cli_b"], chat_type="group", mentions=["cli_b"]
    )
    await eventually(lambda: bots.events.get("cli_a") and bots.events.get("cli_b"))
    a, b = bots.events["cli_a"][0], bots.events["cli_b"][0]
    assert a["event"]["message"]["message_id"] == b["event"]["message"]["message_id"]
    assert a["header"]["event_id"] != b["header"]["event_id"]
    ids_a, ids_b = (e["event"]["sender"]["sender_id"] for e in (a, b))
    assert ids_a["open_id"] != ids_b["open_id"] and ids_a["union_id"] == ids_b["union_id"]
    [mention] = b["event"]["message"]["mentions"]
    assert mention["id"]["open_id"] == fake.apps["cli_b"].open_id
    assert text_of(b) == "@_user_1 hi both" and injected["chat_id"].startswith("oc_")
