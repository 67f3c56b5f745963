"""OutputShipper: numbering, chunking, decoding, batching, retries and bounded memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from pal.daemon.output import MAX_BATCH_CHUNKS, OutputShipper
from pal.daemon.server_api import ApiError, Unreachable


class FakeSend:
    """Records each batch it accepts; raises the queued ``failures`` first, then ``always``
    (when set) on every call; ``block`` makes every call hang."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.calls = 0
        self.failures: list[Exception] = []
        self.always: Exception | None = None
        self.block = False

    async def __call__(self, chunks: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.block:
            await asyncio.Event().wait()
        if self.failures:
            raise self.failures.pop(0)
        if self.always is not None:
            raise self.always
        self.batches.append(chunks)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [chunk for batch in self.batches for chunk in batch]

    def text(self, stream: str | None = None) -> str:
        """Everything received, once per seq, in seq order."""
        by_seq = {c["seq"]: c for c in self.chunks if stream is None or c["stream"] == stream}
        return "".join(by_seq[seq]["data"] for seq in sorted(by_seq))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_chunks_are_numbered_across_streams_and_small_writes_share_a_chunk() -> None:
    send = FakeSend()
    shipper = OutputShipper(send)
    shipper.write("stdout", b"a")
    shipper.write("stderr", b"b")
    shipper.write("stdout", b"c")
    shipper.write("stdout", b"d")
    await shipper.close()
    assert send.chunks == [
        {"seq": 0, "stream": "stdout", "data": "a"},
        {"seq": 1, "stream": "stderr", "data": "b"},
        {"seq": 2, "stream": "stdout", "data": "cd"},
    ]
    assert shipper.sent_bytes == 4 and shipper.dropped_bytes == 0


async def test_chunks_stay_within_chunk_bytes_and_are_cut_between_characters() -> None:
    send = FakeSend()
    shipper = OutputShipper(send, chunk_bytes=10)
    text = "a€😀é" * 20 + "z"
    shipper.write("stdout", text.encode())
    shipper.write("stdout", "€€€".encode())  # merged into the tail only while it fits
    await shipper.close()
    sizes = [len(c["data"].encode()) for c in send.chunks]
    assert max(sizes) <= 10
    assert [c["seq"] for c in send.chunks] == list(range(len(sizes)))
    assert send.text() == text + "€€€"
    assert shipper.sent_bytes == len((text + "€€€").encode())


async def test_a_character_split_across_writes_is_decoded_whole() -> None:
    send = FakeSend()
    shipper = OutputShipper(send)
    euro = "€".encode()
    for byte in euro:
        shipper.write("stdout", bytes([byte]))
    shipper.write("stderr", euro[:2])  # another stream has its own decoder
    shipper.write("stdout", b"!")
    shipper.write("stderr", euro[2:])
    await shipper.close()
    assert send.text("stdout") == "€!"
    assert send.text("stderr") == "€"


async def test_invalid_bytes_become_replacement_characters() -> None:
    send = FakeSend()
    shipper = OutputShipper(send)
    shipper.write("stdout", b"ok\xff\xfe!")
    shipper.write("stderr", "€".encode()[:2])  # cut short: flushed by close
    await shipper.close()
    assert send.text("stdout") == "ok\ufffd\ufffd!"
    assert send.text("stderr") == "\ufffd"


async def test_output_is_sent_every_interval_without_close() -> None:
    send = FakeSend()
    shipper = OutputShipper(send, interval=0.02)
    shipper.start()
    shipper.write("stdout", b"first")
    await until(lambda: send.text() == "first")
    shipper.write("stdout", b" second")
    await until(lambda: send.text() == "first second")
    assert len(send.batches) == 2
    await shipper.close()


async def test_a_full_batch_is_sent_before_the_interval() -> None:
    send = FakeSend()
    shipper = OutputShipper(send, interval=3600, batch_bytes=100, chunk_bytes=40)
    shipper.start()
    shipper.write("stdout", b"x" * 30)
    for _ in range(20):
        await asyncio.sleep(0)
    assert send.batches == []  # below batch_bytes: waits for the (hour-long) interval
    shipper.write("stdout", b"y" * 370)
    await until(lambda: len(send.text()) == 400)
    assert all(sum(len(c["data"]) for c in batch) <= 100 for batch in send.batches)
    assert send.text() == "x" * 30 + "y" * 370
    await shipper.close()


async def test_a_batch_holds_at_most_256_chunks() -> None:
    send = FakeSend()
    shipper = OutputShipper(send, chunk_bytes=4, batch_bytes=1 << 20)
    for i in range(300):
        shipper.write("stdout" if i % 2 else "stderr", b"abc")
    await shipper.close()
    assert [len(batch) for batch in send.batches] == [MAX_BATCH_CHUNKS, 300 - MAX_BATCH_CHUNKS]


async def test_a_failed_send_is_retried_until_it_succeeds() -> None:
    send = FakeSend()
    send.failures = [Unreachable("down"), RuntimeError("boom"), ApiError(503, "busy")]
    shipper = OutputShipper(send, interval=0.005)
    shipper.start()
    shipper.write("stdout", b"hello ")
    shipper.write("stderr", b"world")
    await until(lambda: send.batches != [])
    assert send.calls == 4
    assert send.text("stdout") == "hello " and send.text("stderr") == "world"
    assert shipper.sent_bytes == 11 and shipper.dropped_bytes == 0
    await shipper.close()


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_a_batch_the_server_refuses_for_good_is_dropped(status: int) -> None:
    send = FakeSend()
    send.failures = [ApiError(status, "no")]
    shipper = OutputShipper(send, interval=0.005)
    shipper.start()
    shipper.write("stdout", b"refused")
    await until(lambda: send.calls == 1 and shipper.dropped_bytes == 7)
    shipper.write("stdout", b"taken")
    await shipper.close()
    assert send.chunks == [{"seq": 1, "stream": "stdout", "data": "taken"}]
    assert shipper.sent_bytes == 5


@pytest.mark.parametrize("status", [408, 429, 500])
async def test_a_batch_refused_for_now_is_retried(status: int) -> None:
    send = FakeSend()
    send.failures = [ApiError(status, "later")]
    shipper = OutputShipper(send, interval=0.005)
    shipper.write("stdout", b"kept")
    await shipper.close()
    assert send.calls == 2 and send.text() == "kept" and shipper.dropped_bytes == 0


async def test_memory_stays_bounded_while_sending_fails() -> None:
    send = FakeSend()
    send.always = Unreachable("the server is down")
    shipper = OutputShipper(
        send, interval=0.005, max_buffered=1000, batch_bytes=200, chunk_bytes=100
    )
    shipper.start()
    total = 0
    for i in range(100):
        data = bytes([97 + i % 26]) * 97
        shipper.write("stdout" if i % 3 else "stderr", data)
        total += len(data)
        assert shipper.buffered_bytes <= 1000 + 200
        if i % 10 == 0:
            await until(lambda n=i // 10: send.calls > n)  # let it fail meanwhile
    assert shipper.dropped_bytes >= total - 1200
    send.always = None
    await shipper.close(timeout=5)
    assert shipper.sent_bytes + shipper.dropped_bytes == total
    assert 800 <= shipper.sent_bytes <= 1200
    # what arrived is the newest output, in order
    seqs = sorted(c["seq"] for c in send.chunks)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[-1] == 99  # one chunk per write: the last one made it


async def test_close_sends_everything_buffered() -> None:
    send = FakeSend()
    shipper = OutputShipper(send, interval=3600, chunk_bytes=1000)
    shipper.start()
    data = bytes(range(32, 127)) * 500
    shipper.write("stdout", data)
    await shipper.close()
    assert send.text() == data.decode()
    assert shipper.sent_bytes == len(data) and shipper.dropped_bytes == 0


async def test_close_gives_up_after_its_timeout_and_counts_the_rest_as_dropped() -> None:
    send = FakeSend()
    send.block = True
    shipper = OutputShipper(send, interval=0.005)
    shipper.start()
    shipper.write("stdout", b"a" * 100)
    await until(lambda: send.calls == 1)  # one batch stuck in flight
    shipper.write("stderr", b"b" * 50)
    started = time.monotonic()
    await shipper.close(timeout=0.1)
    assert time.monotonic() - started < 1.0
    assert shipper.dropped_bytes == 150 and shipper.sent_bytes == 0
    shipper.write("stdout", b"late")  # after close: counted, never raises
    assert shipper.dropped_bytes == 154
    await shipper.close()  # idempotent


async def test_close_while_sending_keeps_failing_gives_up_too() -> None:
    send = FakeSend()
    send.always = RuntimeError("broken")
    shipper = OutputShipper(send, interval=0.005)
    shipper.write("stdout", b"lost")
    await shipper.close(timeout=0.05)
    assert send.calls >= 1
    assert shipper.dropped_bytes == 4 and shipper.sent_bytes == 0
