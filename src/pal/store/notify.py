"""PostgreSQL LISTEN/NOTIFY on one channel, for the server processes sharing a database.

:func:`notify` is a store function (``await db.write(notify, payloads)``): the payloads go
out when its transaction commits, in order. :class:`Listener` is a dedicated autocommit
psycopg connection (not from the pool: a pooled connection would be handed to other work)
that LISTENs and yields what arrives. ``server/replicas.py`` builds the hub's fan-out on
these two. A notification reaches every session listening in the same database, the
sender's own listener included.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

CHANNEL = "pal_events"
# PostgreSQL refuses a payload of 8000 bytes or more.
MAX_PAYLOAD = 7900
# How long the listener waits in silence before it checks its connection with a query.
IDLE_CHECK_SECONDS = 15.0

_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")

# What a dropped or unusable listening connection raises.
ListenerLost = (psycopg.OperationalError, psycopg.InterfaceError)


def notify(conn: Connection, payloads: list[str]) -> None:
    """NOTIFY each payload on :data:`CHANNEL` (sent at commit, in this order)."""
    for payload in payloads:
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as psycopg itself takes it."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)


class Listener:
    """One connection LISTENing on :data:`CHANNEL`; ``application_name`` names it in
    ``pg_stat_activity``. Errors of a dropped connection are :data:`ListenerLost`."""

    def __init__(self, url: str, application_name: str) -> None:
        self._url = libpq_url(url)
        self._name = application_name
        self._conn: psycopg.AsyncConnection[object] | None = None

    async def connect(self) -> None:
        """Open the connection and LISTEN; notifications sent from now on are received."""
        await self.close()
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            application_name=self._name,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        await conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn

    async def payloads(self) -> AsyncGenerator[str, None]:
        """Each payload as it arrives; a quiet connection is checked with ``SELECT 1``
        every :data:`IDLE_CHECK_SECONDS`. Ends only by raising (:data:`ListenerLost`)."""
        conn = self._conn
        if conn is None:
            raise psycopg.InterfaceError("the listener is not connected")
        while True:
            received = 0
            async for notification in conn.notifies(timeout=IDLE_CHECK_SECONDS):
                received += 1
                yield notification.payload
            if not received:
                await conn.execute("SELECT 1")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
