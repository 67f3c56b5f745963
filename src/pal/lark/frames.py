"""The frames of Lark's long connection (lark.md §1.4-1.7), for our client and the fake platform.

Every WebSocket message is one binary protobuf ``pbbp2.Frame``. The codec is the SDK's own
generated class (``lark_oapi.ws.pb.pbbp2_pb2.Frame``), imported on first use only: importing
``lark_oapi`` takes about two seconds, so :func:`aload` does it in a worker thread before a
connection needs it. Everything else here works on :class:`Frame`, a plain typed copy, so no
untyped SDK object leaks out of this module.

* control frames (``method`` 0): ``ping`` from the client, ``pong`` from the platform (its
  payload, when present, is a ClientConfig JSON);
* data frames (``method`` 1): ``event`` (and ``card``, which clients ignore), with the
  headers ``type``, ``message_id`` (the transport message), ``sum``, ``seq`` and ``trace_id``;
  a payload larger than one frame is split into ``sum`` fragments that :class:`Reassembly`
  joins again;
* the ack: the frame that completed the event, echoed with ``biz_rt`` added and the payload
  ``{"code": 200}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

CONTROL = 0
DATA = 1
REQUIRED_DATA_HEADERS = ("type", "message_id", "sum", "seq", "trace_id")
MAX_PARTS = 1000  # a split event bigger than this is refused (the platform splits at ~1 MiB)
REASSEMBLY_TTL = 10.0


class FrameError(ValueError):
    """Bytes that are not a valid frame, or a data frame without its required headers."""


@dataclass
class Frame:
    """One ``pbbp2.Frame``. ``headers`` keep their order (acks echo them)."""

    method: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    payload: bytes = b""
    seq_id: int = 0
    log_id: int = 0
    service: int = 0

    def header(self, key: str) -> str | None:
        """The first header ``key``, or None."""
        for name, value in self.headers:
            if name == key:
                return value
        return None

    @property
    def type(self) -> str | None:
        return self.header("type")


# -- the SDK's generated class, typed ---------------------------------------------------------


class _PbHeader(Protocol):
    key: str
    value: str


class _PbHeaders(Protocol):
    def add(self) -> _PbHeader: ...

    def __iter__(self) -> Any: ...


class _PbFrame(Protocol):
    SeqID: int
    LogID: int
    service: int
    method: int
    payload: bytes
    headers: _PbHeaders

    def SerializeToString(self) -> bytes: ...  # noqa: N802 (the generated name)

    def ParseFromString(self, data: bytes) -> int: ...  # noqa: N802


_pb_class: Callable[[], _PbFrame] | None = None
_pb_lock = threading.Lock()


def load(loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], _PbFrame]:
    """The SDK's Frame class, imported on the first call (about two seconds).

    Importing ``lark_oapi`` grabs "the current event loop" at module level (lark.md §5.1), so
    the import runs in a thread of its own whose current loop is ``loop`` (:func:`aload`
    passes the running one), or else a throwaway loop closed right after: no stray loop is
    left unclosed and the caller's thread keeps its own loop state."""
    global _pb_class
    with _pb_lock:
        if _pb_class is None:
            found: list[Any] = []

            def run() -> None:
                target = loop or asyncio.new_event_loop()
                asyncio.set_event_loop(target)
                try:
                    from lark_oapi.ws.pb.pbbp2_pb2 import (  # type: ignore[import-untyped]
                        Frame as PbFrame,
                    )

                    found.append(PbFrame)
                except BaseException as exc:
                    found.append(exc)
                finally:
                    asyncio.set_event_loop(None)
                    if loop is None:
                        target.close()

            thread = threading.Thread(target=run, name="lark-import", daemon=True)
            thread.start()
            thread.join()
            if not found or isinstance(found[0], BaseException):
                raise ImportError("lark_oapi's pbbp2 Frame cannot be imported") from (
                    found[0] if found else None
                )
            _pb_class = cast(Callable[[], _PbFrame], found[0])
        return _pb_class


async def aload() -> None:
    """:func:`load` without blocking the running loop meanwhile."""
    if _pb_class is None:
        await asyncio.to_thread(load, asyncio.get_running_loop())


def encode(frame: Frame) -> bytes:
    """The wire bytes of ``frame``."""
    pb = load()()
    pb.SeqID = frame.seq_id
    pb.LogID = frame.log_id
    pb.service = frame.service
    pb.method = frame.method
    for key, value in frame.headers:
        header = pb.headers.add()
        header.key = key
        header.value = value
    if frame.payload:
        pb.payload = frame.payload
    return pb.SerializeToString()


def decode(data: bytes) -> Frame:
    """The frame in ``data``; :class:`FrameError` if it is not one."""
    if not isinstance(data, bytes | bytearray):
        raise FrameError("a text message, not a binary frame")
    pb = load()()
    try:
        pb.ParseFromString(bytes(data))
    except Exception as exc:  # the vendored protobuf raises its own DecodeError
        raise FrameError(f"not a pbbp2 frame ({type(exc).__name__})") from None
    return Frame(
        method=int(pb.method),
        headers=[(str(h.key), str(h.value)) for h in pb.headers],
        payload=bytes(pb.payload),
        seq_id=int(pb.SeqID),
        log_id=int(pb.LogID),
        service=int(pb.service),
    )


# -- building frames -------------------------------------------------------------------------


def ping(service_id: int) -> Frame:
    """The client's ping: control, ``type=ping``, no payload."""
    return Frame(method=CONTROL, headers=[("type", "ping")], service=service_id)


def pong(config: dict[str, Any] | None = None) -> Frame:
    """The platform's answer to a ping; ``config`` (a ClientConfig) replaces the client's."""
    payload = json.dumps(config).encode() if config is not None else b""
    return Frame(method=CONTROL, headers=[("type", "pong")], payload=payload)


def data_frames(
    payload: bytes,
    *,
    message_id: str,
    trace_id: str = "",
    parts: int = 1,
    type: str = "event",
    seq_id: int = 0,
    log_id: int = 0,
    service: int = 0,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[Frame]:
    """``payload`` as ``parts`` data frames of one transport message (split in byte ranges
    of nearly equal size; every fragment carries all the required headers)."""
    if parts < 1 or parts > MAX_PARTS:
        raise ValueError(f"parts must be 1..{MAX_PARTS}")
    size = -(-len(payload) // parts) if payload else 0
    extra = list(extra_headers)
    frames = []
    for seq in range(parts):
        chunk = payload[seq * size : (seq + 1) * size] if size else b""
        headers = [
            ("type", type),
            ("message_id", message_id),
            ("sum", str(parts)),
            ("seq", str(seq)),
            ("trace_id", trace_id),
            *extra,
        ]
        frames.append(
            Frame(
                method=DATA,
                headers=headers,
                payload=chunk,
                seq_id=seq_id + seq,
                log_id=log_id,
                service=service,
            )
        )
    return frames


def ack(frame: Frame, *, biz_rt_ms: int = 0, code: int = 200) -> Frame:
    """The answer to a data frame: the same frame with ``biz_rt`` added and the payload
    ``{"code": code}``."""
    headers = [(k, v) for k, v in frame.headers if k != "biz_rt"]
    headers.append(("biz_rt", str(biz_rt_ms)))
    return Frame(
        method=frame.method,
        headers=headers,
        payload=json.dumps({"code": code}).encode(),
        seq_id=frame.seq_id,
        log_id=frame.log_id,
        service=frame.service,
    )


def check_data_frame(frame: Frame) -> tuple[str, int, int]:
    """(message_id, sum, seq) of a data frame; :class:`FrameError` when a required header is
    missing or ``sum``/``seq`` are not a valid fragment position."""
    missing = [k for k in REQUIRED_DATA_HEADERS if frame.header(k) is None]
    if missing:
        raise FrameError(f"data frame without the header(s) {', '.join(missing)}")
    try:
        parts, seq = int(frame.header("sum") or ""), int(frame.header("seq") or "")
    except ValueError:
        raise FrameError("data frame whose sum or seq is not a number") from None
    if not 1 <= parts <= MAX_PARTS or not 0 <= seq < parts:
        raise FrameError(f"data frame with seq {seq} of sum {parts}")
    return frame.header("message_id") or "", parts, seq


class Reassembly:
    """Fragments of split messages, by transport ``message_id``, kept ``ttl`` seconds after
    the first one arrived (an incomplete message is then dropped: the platform re-pushes
    events that were not acked)."""

    def __init__(self, ttl: float = REASSEMBLY_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._buffers: dict[str, tuple[float, list[bytes | None]]] = {}

    def __len__(self) -> int:
        return len(self._buffers)

    def add(self, frame: Frame) -> bytes | None:
        """The whole payload when ``frame`` completes its message (at once for ``sum`` 1),
        else None. :class:`FrameError` for a frame without valid fragment headers."""
        message_id, parts, seq = check_data_frame(frame)
        if parts == 1:
            return frame.payload
        now = self._clock()
        self._expire(now)
        started, slots = self._buffers.get(message_id, (now, [None] * parts))
        if len(slots) != parts:
            raise FrameError(f"message {message_id}: sum changed from {len(slots)} to {parts}")
        slots[seq] = frame.payload
        if any(slot is None for slot in slots):
            self._buffers[message_id] = (started, slots)
            return None
        self._buffers.pop(message_id, None)
        return b"".join(cast(list[bytes], slots))

    def _expire(self, now: float) -> None:
        for key in [k for k, (t, _) in self._buffers.items() if now - t > self.ttl]:
            del self._buffers[key]
