"""The replicas' wire format (server/replicas.py) and the hub's gap (server/hub.py)."""

from __future__ import annotations

import orjson
import pytest

from pal.server.hub import Hub
from pal.server.replicas import decode, encode
from pal.store.notify import MAX_PAYLOAD


def test_events_round_trip_without_their_local_ids():
    hub = Hub()
    events = [
        hub.publish("message", room_id="r1", message_id=7),
        hub.publish("delivery", agent_key="codex", delivery_id=9),
    ]
    [payload] = encode("origin1", events)
    assert decode(payload) == (
        "origin1",
        False,
        [
            ("message", {"room_id": "r1", "message_id": 7}),
            ("delivery", {"agent_key": "codex", "delivery_id": 9}),
        ],
    )


def test_many_events_are_split_under_postgres_payload_limit_in_order():
    hub = Hub()
    events = [hub.publish("run_output", run_id=i, seq=i * 3) for i in range(2000)]
    payloads = encode("o", events)
    assert len(payloads) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD for p in payloads)
    received = [data["run_id"] for p in payloads for _, data in decode(p)[2]]
    assert received == list(range(2000))


def test_an_event_too_big_to_notify_becomes_a_resync():
    hub = Hub()
    small = hub.publish("room", room_id="r")
    huge = hub.publish("artifact", action="cleanup", removed=["x" * 100] * 100)
    [payload] = encode("o", [huge, small])
    origin, resync, events = decode(payload)
    assert resync is True and events == [("room", {"room_id": "r"})]


def test_a_resync_alone_is_one_payload():
    assert [decode(p) for p in encode("o", [], resync=True)] == [("o", True, [])]
    assert encode("o", []) == []


@pytest.mark.parametrize(
    "payload", ["not json", "[]", '{"events": []}', '{"origin": "o", "events": [["k"]]}']
)
def test_a_foreign_notification_is_refused(payload):
    with pytest.raises(ValueError):
        decode(payload)


def test_republished_events_are_numbered_here_and_not_forwarded():
    hub = Hub()
    forwarded: list[dict] = []
    hub.forward = forwarded.append
    mine = hub.publish("room", room_id="a")
    theirs = hub.republish("room", {"room_id": "b"})
    assert (mine["id"], theirs["id"]) == (1, 2)
    assert forwarded == [mine]
    assert hub.since(0) == [mine, theirs]


def test_a_gap_resyncs_every_subscriber_and_every_resume_from_before_it():
    hub = Hub()
    hub.publish("room", room_id="a")
    with hub.subscribe() as queue:
        hub.gap()
        assert queue.get_nowait() is None  # the subscriber was ended: it resyncs
        assert hub._subscribers == {}
    after_gap = hub.last
    assert hub.since(1) is None and hub.since(0) is None
    assert hub.since(after_gap) == []
    later = hub.publish("room", room_id="b")
    assert hub.since(after_gap) == [later]
    assert hub.since(after_gap - 1) is None
    assert orjson.dumps(later)  # events stay plain JSON
