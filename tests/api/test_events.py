"""GET /api/events: Server-Sent Events from the hub, resumable by event id without gaps or
duplicates, resync when events were lost, a kinds filter, pings, and a clean end."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest

from pal.server.api import events
from pal.server.hub import HISTORY, QUEUE_SIZE, Hub
from tests.conftest import wait_until
from tests.e2e.conftest import start_server, stop_process
from tests.helpers import post

Frame = dict[str, Any]


class Stream:
    """Reads the frames of an open event stream. The tests set a short ping interval, so
    the stream always sends something and every read is bounded by a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def frame(self) -> Frame:
        """The next frame: ``{"event", "data", "id"}``, or ``{"comment": ...}``."""
        fields: Frame = {}
        for line in self.lines:
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(": ")
            fields[name] = orjson.loads(value) if name == "data" else value
        raise AssertionError(f"the stream ended; frame so far: {fields}")

    def next(self, timeout: float = 5.0) -> Frame:
        """The next frame that is not a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.frame()
            if "comment" not in frame:
                return frame
        raise AssertionError(f"no event within {timeout}s")

    def rest(self, timeout: float = 5.0) -> list[str]:
        """The lines left until the response ends (pings keep each read short)."""
        deadline = time.monotonic() + timeout
        lines = []
        for line in self.lines:
            lines.append(line)
            if time.monotonic() > deadline:
                raise AssertionError(f"the stream did not end within {timeout}s")
        return lines

    def until(self, event: str, limit: int) -> list[Frame]:
        """Frames up to and including the first ``event`` (at most ``limit`` frames)."""
        seen = []
        for _ in range(limit):
            seen.append(self.next())
            if seen[-1]["event"] == event:
                return seen
        raise AssertionError(f"no {event!r} in {limit} frames: {seen[-3:]}")


@pytest.fixture(autouse=True)
def quick_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "PING_SECONDS", 0.1)


@contextmanager
def listen(client, path: str = "/api/events", **headers: str) -> Iterator[Stream]:
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        yield Stream(response)


def publish(client, kind: str, **data: Any) -> dict[str, Any]:
    """Publish on the app's hub from its event loop (as a request handler does)."""
    hub: Hub = client.app.state.hub
    event: dict[str, Any] = client.portal.call(lambda: hub.publish(kind, **data))
    return event


def flood(client, count: int, kind: str = "run_output") -> None:
    hub: Hub = client.app.state.hub

    def publish_all() -> None:
        for seq in range(count):
            hub.publish(kind, run_id=1, seq=seq)

    client.portal.call(publish_all)


def wire_id(client, n: int) -> str:
    return f"{client.app.state.hub.boot}-{n}"


# --- hello and live events ----------------------------------------------------------------


def test_stream_says_hello_then_sends_live_events(client):
    before = publish(client, "member", room_id="room_x", member="codex")
    with listen(client) as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-store"
        assert headers["x-accel-buffering"] == "no"
        hello = stream.next()
        boot = client.app.state.hub.boot
        assert hello == {
            "event": "hello",
            "data": {"boot": boot, "last": f"{boot}-{before['id']}"},
            # a fresh connect gets the id live events follow, so a reconnect resumes there
            "id": f"{boot}-{before['id']}",
        }
        message = post(client, "hello")["message"]
        frame = stream.next()
        event_id = wire_id(client, before["id"] + 1)
        assert frame == {
            "id": event_id,
            "event": "message",
            "data": {
                "id": event_id,
                "kind": "message",
                "room_id": message["room_id"],
                "message_id": message["id"],
            },
        }


def test_stream_sends_a_ping_comment_when_quiet(client):
    with listen(client) as stream:
        stream.next()
        frames = [stream.frame() for _ in range(2)]
        assert frames == [{"comment": "ping"}, {"comment": "ping"}]


def test_kinds_filter_sends_only_those_kinds(client):
    with listen(client, "/api/events?kinds=message,%20run,nonsense") as stream:
        stream.next()
        publish(client, "member", room_id="room_x", member="codex")
        publish(client, "run_output", run_id=1, seq=0)
        run = publish(client, "run", run_id=1, status="running")
        message = post(client, "hi")["message"]
        first, second = stream.next(), stream.next()
        assert first["data"] == {**run, "id": wire_id(client, run["id"])}
        assert second["event"] == "message"
        assert second["data"]["message_id"] == message["id"]


def test_unknown_kinds_only_get_hello_and_pings(client):
    with listen(client, "/api/events?kinds=nothing-like-this") as stream:
        assert stream.next()["event"] == "hello"
        post(client, "hi")
        assert [stream.frame() for _ in range(2)] == [{"comment": "ping"}] * 2


# --- resuming -------------------------------------------------------------------------------


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(client):
    with listen(client) as stream:
        stream.next()
        post(client, "seen")
        last_seen = stream.next()["id"]
    missed = [post(client, f"missed {i}")["message"]["id"] for i in range(3)]
    with listen(client, **{"Last-Event-ID": last_seen}) as stream:
        hello = stream.next()
        assert hello["event"] == "hello" and "id" not in hello  # the browser keeps its own
        replayed = [stream.next() for _ in missed]
        assert [f["data"]["message_id"] for f in replayed] == missed
        marker = publish(client, "member", room_id="room_x", member="marker")
        # the next frame is the new event: nothing came twice
        assert stream.next()["id"] == wire_id(client, marker["id"])


def test_after_parameter_resumes_like_last_event_id(client):
    with listen(client) as stream:
        since = stream.next()["id"]  # a fresh hello's id: nothing seen yet
    first = post(client, "while away")["message"]["id"]
    with listen(client, f"/api/events?after={since}") as stream:
        stream.next()
        assert stream.next()["data"]["message_id"] == first


def test_last_event_id_wins_over_after(client):
    post(client, "one")
    old = wire_id(client, 0)
    recent = wire_id(client, client.app.state.hub.last)
    with listen(client, f"/api/events?after={old}", **{"Last-Event-ID": recent}) as stream:
        stream.next()
        marker = publish(client, "member", room_id="room_x", member="marker")
        assert stream.next()["id"] == wire_id(client, marker["id"])


def test_replay_honours_the_kinds_filter(client):
    start = wire_id(client, client.app.state.hub.last)
    publish(client, "run_output", run_id=1, seq=0)
    run = publish(client, "run", run_id=1, status="running")
    with listen(client, f"/api/events?kinds=run&after={start}") as stream:
        stream.next()
        assert stream.next()["id"] == wire_id(client, run["id"])


@pytest.mark.parametrize(
    "last_id",
    ["other", "0000000g-1", "garbage", "", "1-2-3", "x" * 500],
    ids=["another boot", "bad boot", "no dash", "empty", "three parts", "long"],
)
def test_an_unknown_or_malformed_id_means_resync(client, last_id):
    if last_id == "other":
        boot = client.app.state.hub.boot
        last_id = ("0" if boot[0] != "0" else "1") + boot[1:] + "-1"
    post(client, "before")
    with listen(client, f"/api/events?after={last_id}") as stream:
        hello = stream.next()
        assert hello["event"] == "hello"
        if last_id == "":  # an empty id is no id: a fresh connect, no resync
            marker = publish(client, "member", room_id="room_x", member="marker")
            assert stream.next()["id"] == wire_id(client, marker["id"])
            return
        now = wire_id(client, client.app.state.hub.last)
        assert stream.next() == {"event": "resync", "data": {}, "id": now}


def test_an_id_from_the_future_means_resync(client):
    future = wire_id(client, client.app.state.hub.last + 5)
    with listen(client, **{"Last-Event-ID": future}) as stream:
        stream.next()
        assert stream.next()["event"] == "resync"


def test_an_id_older_than_the_history_means_resync(client):
    start = wire_id(client, client.app.state.hub.last)
    flood(client, HISTORY + 1)
    with listen(client, **{"Last-Event-ID": start}) as stream:
        stream.next()
        assert stream.next()["event"] == "resync"


def test_the_oldest_id_still_buffered_replays_everything_after_it(client):
    start = client.app.state.hub.last
    flood(client, HISTORY)
    with listen(client, **{"Last-Event-ID": wire_id(client, start)}) as stream:
        stream.next()
        replayed = [stream.next()["id"] for _ in range(HISTORY)]
        assert replayed == [wire_id(client, start + 1 + i) for i in range(HISTORY)]
        marker = publish(client, "member", room_id="room_x", member="marker")
        assert stream.next()["id"] == wire_id(client, marker["id"])


# --- overflow and the end of a stream -----------------------------------------------------


def test_a_stream_that_falls_behind_gets_resync_and_keeps_going(client):
    with listen(client) as stream:
        stream.next()
        flood(client, QUEUE_SIZE + 50)
        frames = stream.until("resync", limit=QUEUE_SIZE + 1)
        now = wire_id(client, client.app.state.hub.last)
        assert frames[-1] == {"event": "resync", "data": {}, "id": now}
        marker = publish(client, "member", room_id="room_x", member="marker")
        assert stream.next()["id"] == wire_id(client, marker["id"])


def test_closing_the_stream_unsubscribes(client):
    hub: Hub = client.app.state.hub
    before = set(hub._subscribers)  # the server's own (the Lark bridge follows the hub)
    with listen(client) as stream:
        stream.next()
        assert len(set(hub._subscribers) - before) == 1
    wait_until(lambda: set(hub._subscribers) == before, timeout=5)


def test_a_closed_hub_ends_the_stream(client):
    with listen(client) as stream:
        stream.next()
        client.portal.call(client.app.state.hub.close)
        rest = stream.rest()
        assert not [line for line in rest if line and not line.startswith(":")], rest


def test_hub_since_returns_the_events_after_a_number_or_none():
    hub = Hub(history=3)
    assert hub.since(0) == []
    published = [hub.publish("run", run_id=i) for i in range(5)]
    assert hub.since(5) == []
    assert hub.since(2) == published[2:]
    assert hub.since(1) is None  # event 2 fell out of the buffer
    assert hub.since(6) is None
    assert hub.since(-1) is None


def test_a_real_server_stops_promptly_with_a_stream_open(tmp_path):
    server = start_server(tmp_path / "home")
    try:
        with httpx.stream("GET", f"{server.url}/api/events", timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("id: ")
            assert next(lines) == "event: hello"
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert list(lines)[-1:] in ([], [""])  # the server ended the response
        assert server.proc.wait(timeout=10) in (0, -signal.SIGTERM)  # a graceful exit
        assert time.monotonic() - started < 5
        assert "Traceback" not in server.log.read_text()
    finally:
        stop_process(server.proc)


def test_rooms_topics_and_computers_announce_themselves(client):
    hub = client.app.state.hub
    start = hub.last
    room = client.post("/api/rooms", json={"name": "announced"}).json()["room"]
    topic = client.post("/api/rooms/announced/topics", json={"title": "t"}).json()["topic"]
    made = client.post("/api/computers/provision", json={"name": "box"}).json()["computer"]
    events = [(e["kind"], e) for e in hub.since(start)]
    assert [kind for kind, _ in events] == ["room", "topic", "computer"]
    assert events[0][1]["room_id"] == room["id"]
    assert (events[1][1]["room_id"], events[1][1]["topic_id"]) == (room["id"], topic["id"])
    assert (events[2][1]["computer_id"], events[2][1]["status"]) == (made["id"], "offline")
