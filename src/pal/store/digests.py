"""Periodic digests: one delivery per period for a member in mode ``periodic``.

A periodic member's membership row keeps ``cursor`` (the last message id its digests
covered) and ``last_digest_at`` (when its current period began: its last digest, or when it
became periodic; null only for memberships older than digests, which count from
``created_at``). The room's ``settings.digest_period`` (seconds, default
:data:`DEFAULT_PERIOD`) is the period.

A member is **due** once a period has passed since ``last_digest_at``. A due member gets a
digest when the room has a message after its cursor that *triggers* one: not its own, not a
``system`` notice, and not already delivered to it (a mention, a debate turn). The digest is
one ``pending`` delivery with reason ``digest`` and ``digest_after`` = the old cursor; its
``message_id`` is the newest triggering message, so it covers the room's messages in
``(digest_after, message_id]`` (the mentions among them are shown again, as context) and the
unique ``(agent_key, message_id)`` always holds. The cursor moves to ``message_id`` and the
next period starts; messages after it wait for the next digest. Nothing new that triggers:
no digest, and the member stays due, so the next triggering message gets a digest at the
next sweep. So a member gets at most one digest per period, and none when nothing is new.

Making a digest is one conditional ``UPDATE`` of the membership (``WHERE cursor = <the
cursor it was read with> AND mode = 'periodic'``) and the delivery's ``INSERT``, in one
transaction: of two sweeps that read the same cursor (two servers on one PostgreSQL
database), the second updates no row and makes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.store.rows import as_dict, as_dicts
from pal.store.tables import deliveries, memberships, messages, rooms

REASON = "digest"
DEFAULT_PERIOD = 3600
"""Seconds between a member's digests when the room's ``settings`` has no ``digest_period``."""
MIN_PERIOD = 5
MAX_PERIOD = 7 * 24 * 3600

_PERIODIC = (
    sa.select(
        memberships.c.room_id,
        memberships.c.member,
        memberships.c.cursor,
        memberships.c.last_digest_at,
        memberships.c.created_at,
        rooms.c.settings,
    )
    .select_from(memberships.join(rooms, rooms.c.id == memberships.c.room_id))
    .where(memberships.c.mode == "periodic", memberships.c.member_kind == "agent")
)


def digest_period(settings: dict[str, Any]) -> int:
    """The room's digest period in seconds (``settings`` as stored; a value the API would
    refuse, stored before it checked, counts as the default)."""
    value = settings.get("digest_period")
    if isinstance(value, int) and not isinstance(value, bool) and MIN_PERIOD <= value:
        return min(value, MAX_PERIOD)
    return DEFAULT_PERIOD


@dataclass
class Due:
    """What one sweep found: the due members (``room_id``, ``member``, ``cursor``) and the
    shortest digest period of any periodic member (None: there is none)."""

    members: list[dict[str, Any]] = field(default_factory=list)
    shortest_period: int | None = None


def find_due(conn: Connection, now: datetime) -> Due:
    """The periodic members whose period has passed at ``now`` and who have a message that
    triggers a digest (see the module docstring). One indexed read when nobody is periodic."""
    due = Due()
    for member in as_dicts(conn.execute(_PERIODIC)):
        period = digest_period(member["settings"] or {})
        due.shortest_period = min(period, due.shortest_period or period)
        started = member["last_digest_at"] or member["created_at"]
        if now - started < timedelta(seconds=period):
            continue
        if newest_trigger(conn, member["room_id"], member["member"], member["cursor"]):
            due.members.append({k: member[k] for k in ("room_id", "member", "cursor")})
    return due


def newest_trigger(conn: Connection, room_id: str, agent_key: str, cursor: int) -> int | None:
    """The newest message of the room after ``cursor`` that triggers a digest for
    ``agent_key``: not its own, not a system notice, not delivered to it already."""
    delivered = sa.exists().where(
        deliveries.c.agent_key == agent_key, deliveries.c.message_id == messages.c.id
    )
    query = sa.select(sa.func.max(messages.c.id)).where(
        messages.c.room_id == room_id,
        messages.c.id > cursor,
        messages.c.sender != agent_key,
        messages.c.sender_kind != "system",
        ~delivered,
    )
    found = conn.execute(query).scalar()
    return int(found) if found is not None else None


def make_digest(conn: Connection, member: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """Make the digest of ``member`` (``room_id``, ``member``, ``cursor`` as read by
    :func:`find_due`) at ``now``: the delivery made, or None when its cursor moved since
    (another sweep made it), it is no longer periodic, or nothing triggers one any more."""
    message_id = newest_trigger(conn, member["room_id"], member["member"], member["cursor"])
    if message_id is None:
        return None
    try:
        # one savepoint: a refused insert takes the cursor update back with it
        with conn.begin_nested():
            moved = conn.execute(
                memberships.update()
                .where(
                    memberships.c.room_id == member["room_id"],
                    memberships.c.member == member["member"],
                    memberships.c.mode == "periodic",
                    memberships.c.cursor == member["cursor"],
                )
                .values(cursor=message_id, last_digest_at=now)
            )
            if moved.rowcount != 1:
                return None
            row = conn.execute(
                deliveries.insert()
                .values(
                    agent_key=member["member"],
                    message_id=message_id,
                    room_id=member["room_id"],
                    topic_id=None,
                    reason=REASON,
                    status="pending",
                    attempt=0,
                    digest_after=member["cursor"],
                    created_at=now,
                    updated_at=now,
                )
                .returning(*deliveries.c)
            ).one()
    except sa.exc.IntegrityError:
        # that message was delivered to that agent since it was read (``POST
        # /api/deliveries``): no digest now; the next sweep sees it delivered
        return None
    return as_dict(row)


def make_digests(
    conn: Connection, members: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Make the digests of ``members`` (from :func:`find_due`) in one transaction; returns
    the deliveries made."""
    made = [make_digest(conn, member, now) for member in members]
    return [d for d in made if d is not None]
