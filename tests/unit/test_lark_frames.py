"""The pbbp2 frame codec and the reassembly of split events (pal.lark.frames)."""

from __future__ import annotations

import json

import pytest

from pal.lark import frames

SDK_PING_BYTES = bytes.fromhex("0800100018012000") + b"\x2a\x0c\x0a\x04type\x12\x04ping"


def test_ping_is_byte_for_byte_the_sdks_ping():
    # lark.md §1.4: the wire bytes of the Python SDK's ping with service_id 1.
    assert frames.encode(frames.ping(1)) == SDK_PING_BYTES
    assert frames.decode(SDK_PING_BYTES) == frames.Frame(
        method=frames.CONTROL, headers=[("type", "ping")], service=1
    )


def test_data_frame_round_trips_every_field():
    frame = frames.Frame(
        method=frames.DATA,
        headers=[("type", "event"), ("message_id", "m1"), ("sum", "1"), ("seq", "0")],
        payload='{"text": "héllo"}'.encode(),
        seq_id=2**63,
        log_id=7,
        service=33554678,
    )
    assert frames.decode(frames.encode(frame)) == frame


def test_decode_refuses_what_is_not_a_frame():
    with pytest.raises(frames.FrameError, match="not a pbbp2 frame"):
        frames.decode(b"\xff\xff\xff")
    with pytest.raises(frames.FrameError, match="text message"):
        frames.decode("ping")  # type: ignore[arg-type]


def test_pong_carries_the_client_config():
    config = {"ReconnectCount": -1, "ReconnectInterval": 2, "ReconnectNonce": 0, "PingInterval": 1}
    frame = frames.decode(frames.encode(frames.pong(config)))
    assert frame.type == "pong" and json.loads(frame.payload) == config
    assert frames.pong().payload == b""


def test_ack_echoes_the_frame_with_biz_rt_and_code_200():
    [frame] = frames.data_frames(b"{}", message_id="m1", trace_id="t1", seq_id=9, log_id=3)
    frame.headers.append(("instance_id", "i-1"))
    ack = frames.ack(frame, biz_rt_ms=4)
    assert (ack.seq_id, ack.log_id, ack.method) == (9, 3, frames.DATA)
    assert ack.headers == [*frame.headers, ("biz_rt", "4")]
    assert json.loads(ack.payload) == {"code": 200}


def test_split_event_is_joined_in_seq_order_and_only_by_the_last_fragment():
    payload = json.dumps({"text": "x" * 1000}).encode()
    parts = frames.data_frames(payload, message_id="m1", parts=3)
    assert [f.header("seq") for f in parts] == ["0", "1", "2"]
    assert all(f.header("sum") == "3" for f in parts)
    buffer = frames.Reassembly()
    assert buffer.add(parts[2]) is None
    assert buffer.add(parts[0]) is None
    assert buffer.add(parts[1]) == payload
    assert len(buffer) == 0


def test_fragments_of_different_messages_do_not_mix():
    a = frames.data_frames(b"aaaa", message_id="a", parts=2)
    b = frames.data_frames(b"bbbb", message_id="b", parts=2)
    buffer = frames.Reassembly()
    assert [buffer.add(f) for f in (a[0], b[0], b[1], a[1])] == [None, None, b"bbbb", b"aaaa"]


def test_incomplete_message_expires_after_the_ttl():
    now = [0.0]
    buffer = frames.Reassembly(ttl=10, clock=lambda: now[0])
    first, second = frames.data_frames(b"abcd", message_id="m1", parts=2)
    buffer.add(first)
    now[0] = 11.0
    assert buffer.add(second) is None  # the first half was dropped; this one starts over
    assert len(buffer) == 1


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([("type", "event"), ("message_id", "m"), ("sum", "1"), ("seq", "0")], "trace_id"),
        ([("type", "event"), ("sum", "1"), ("seq", "0"), ("trace_id", "")], "message_id"),
        (
            [("type", "event"), ("message_id", "m"), ("sum", "x"), ("seq", "0"), ("trace_id", "")],
            "not a number",
        ),
        (
            [("type", "event"), ("message_id", "m"), ("sum", "2"), ("seq", "2"), ("trace_id", "")],
            "seq 2 of sum 2",
        ),
    ],
)
def test_data_frame_without_valid_headers_is_refused(headers, problem):
    # The SDK drops such frames without an ack (lark.md §1.5); so do we.
    with pytest.raises(frames.FrameError, match=problem):
        frames.Reassembly().add(frames.Frame(method=frames.DATA, headers=headers, payload=b"{}"))
