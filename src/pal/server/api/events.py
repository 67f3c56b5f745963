"""``GET /api/events``: the hub's live events as Server-Sent Events, resumable by event id.

An event id is ``<boot>-<n>``: the hub's random boot id and the event's number. A client that
reconnects with the last id it saw (the browser's ``Last-Event-ID``, or ``?after=``) gets
every event it missed, once, in order; when they are gone (the server restarted, or more than
``HISTORY`` events went by) it gets ``resync`` and reloads what it shows from the API. Events
carry ids, not content, like the hub's.

Frames, in order: ``hello`` (``{"boot", "last"}``); the missed events, or ``resync``; then live
events as they happen, a ``: ping`` comment after 15 s of quiet, and ``resync`` if this stream
fell behind the hub and lost events. ``hello`` (on a fresh connect) and ``resync`` carry the id
that live events follow, so a browser that reconnects resumes from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from pal.server.deps import HubDep
from pal.server.hub import Event, Hub

router = APIRouter(tags=["events"])

PING_SECONDS = 15.0
EVENT_ID = re.compile(r"^([0-9a-f]{8})-([0-9]{1,18})$")
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def frame(kind: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """One SSE frame (the JSON has no newlines, so it is one ``data:`` line)."""
    head = f"id: {event_id}\n" if event_id else ""
    body = orjson.dumps(data, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
    return f"{head}event: {kind}\ndata: ".encode() + body + b"\n\n"


def event_frame(hub: Hub, event: Event) -> bytes:
    event_id = f"{hub.boot}-{event['id']}"
    return frame(event["kind"], {**event, "id": event_id}, event_id)


def replay_from(hub: Hub, last_id: str) -> list[Event] | None:
    """The buffered events after ``last_id``; None when the client must resync (another
    boot, events no longer buffered, or an id that is not one of ours)."""
    match = EVENT_ID.match(last_id)
    if match is None or match[1] != hub.boot:
        return None
    return hub.since(int(match[2]))


def parse_kinds(kinds: str | None) -> frozenset[str] | None:
    wanted = frozenset(k.strip() for k in (kinds or "").split(",") if k.strip())
    return wanted or None


async def stream(
    request: Request, hub: Hub, kinds: frozenset[str] | None, last_id: str | None
) -> AsyncIterator[bytes]:
    """The frames of one connection (see the module docstring). It subscribes before it
    takes the replay, with no await in between, so no event falls in a gap or comes twice."""
    with contextlib.ExitStack() as subscription:
        queue = subscription.enter_context(hub.subscribe(kinds))
        now = f"{hub.boot}-{hub.last}"
        missed = None if last_id is None else replay_from(hub, last_id)
        yield frame("hello", {"boot": hub.boot, "last": now}, now if last_id is None else None)
        if last_id is not None and missed is None:
            yield frame("resync", {}, now)
        wanted = [e for e in missed or () if kinds is None or e["kind"] in kinds]
        if wanted:
            yield b"".join(event_frame(hub, e) for e in wanted)
        while not hub.is_closed():
            try:
                first = await asyncio.wait_for(queue.get(), PING_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": ping\n\n"
                continue
            batch = [first]
            while batch[-1] is not None and not queue.empty():
                batch.append(queue.get_nowait())
            chunk = b"".join(event_frame(hub, e) for e in batch if e is not None)
            if batch[-1] is None:  # dropped by the hub: it overflowed, or the server stops
                if hub.is_closed():
                    break
                subscription.close()
                queue = subscription.enter_context(hub.subscribe(kinds))
                chunk += frame("resync", {}, f"{hub.boot}-{hub.last}")
            yield chunk


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an event stream"}},
)
async def events(
    request: Request,
    hub: HubDep,
    kinds: Annotated[
        str | None, Query(max_length=1000, description="comma list of event kinds")
    ] = None,
    after: Annotated[str | None, Query(description="resume after this event id")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Live events as Server-Sent Events (see docs/api.md, "Live events")."""
    last_id = last_event_id or after or None
    return StreamingResponse(
        stream(request, hub, parse_kinds(kinds), last_id),
        media_type="text/event-stream",
        headers=HEADERS,
    )
