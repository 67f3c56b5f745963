"""Run output: the stdout and stderr a daemon ships for a run, kept up to a size bound.

The daemon numbers a run's chunks ``seq`` 0, 1, 2, ... and may send a batch again after a
failed request, so an append is idempotent per ``(run_id, seq)``: a chunk whose seq is
stored, or was trimmed away, is ignored.

The bound: a run keeps at most ``limit`` bytes (``len(data.encode())``, PAL_RUN_OUTPUT_LIMIT).
After an append that goes over it, the oldest chunks (lowest seqs) are deleted until the
rest fit, and their bytes are added to ``runs.output_dropped``; ``runs.output_bytes`` is
what is kept. The chunk with the highest seq is always kept (one that alone is over the
limit keeps its last ``limit`` bytes), so:

* the highest stored seq is the highest seq ever seen (``next_seq`` in the answer), and
* once anything was dropped, the lowest stored seq is the floor: a chunk below it is one
  that was trimmed (a late retry) and is ignored.

Appends to one run take turns: the run's row is locked for the transaction (``FOR UPDATE``
on PostgreSQL; SQLite has one writer), so the counters always match the stored chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.store import runs as runs_store
from pal.store.rows import as_dicts
from pal.store.tables import run_output, runs, utcnow

STREAMS = ("stdout", "stderr")

# NUL cannot be stored in PostgreSQL text, and a lone surrogate (possible in JSON escapes)
# cannot be encoded as UTF-8 at all: both become U+FFFD, on every backend.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(data: str) -> str:
    """``data`` with NUL characters and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", data) if _UNSTORABLE.search(data) else data


def _tail(data: str, size: int, limit: int) -> str:
    """The last ``limit`` bytes of ``data`` (``size`` bytes long), whole characters only."""
    if size <= limit:
        return data
    return data.encode()[size - limit :].decode("utf-8", "ignore")


def append_output(
    conn: Connection,
    run_id: int,
    *,
    computer_id: str,
    chunks: Iterable[Mapping[str, Any]],
    limit: int,
) -> dict[str, Any]:
    """Store the new ones of ``chunks`` (``{seq, stream, data}``) for ``computer_id``'s run
    ``run_id`` and trim the run to ``limit`` bytes, in the caller's transaction.

    Returns ``{run_id, stored, next_seq, output_bytes, output_dropped, seq}``: ``stored``
    counts the new chunks, ``seq`` is the highest new seq (``None`` when nothing was new).
    :class:`NotFound` for an unknown run, :class:`Forbidden` for another computer's.
    """
    run = runs_store.owned_run(conn, run_id, computer_id, lock=True)
    given: dict[int, Mapping[str, Any]] = {}
    for chunk in chunks:
        given.setdefault(int(chunk["seq"]), chunk)  # a seq repeated in one batch: the first
    # Two scalar subqueries, not min() and max() in one: each is then one index probe
    # (SQLite scans every chunk of the run for the pair).
    mine = run_output.c.run_id == run_id
    lowest, highest = conn.execute(
        sa.select(
            sa.select(sa.func.min(run_output.c.seq)).where(mine).scalar_subquery(),
            sa.select(sa.func.max(run_output.c.seq)).where(mine).scalar_subquery(),
        )
    ).one()
    seen: set[int] = set()
    if given and highest is not None and min(given) <= highest:
        seen = set(
            conn.execute(
                sa.select(run_output.c.seq).where(
                    run_output.c.run_id == run_id, run_output.c.seq.in_(sorted(given))
                )
            ).scalars()
        )
    floor = lowest if run["output_dropped"] and lowest is not None else None
    fresh = [seq for seq in sorted(given) if seq not in seen and (floor is None or seq >= floor)]
    answer = {
        "run_id": run_id,
        "stored": len(fresh),
        "next_seq": max(-1 if highest is None else highest, *given, -1) + 1,
        "output_bytes": run["output_bytes"],
        "output_dropped": run["output_dropped"],
        "seq": fresh[-1] if fresh else None,
    }
    if not fresh:
        return answer

    now = utcnow()
    rows = []
    for seq in fresh:
        data = storable(given[seq]["data"])
        rows.append(
            {
                "run_id": run_id,
                "seq": seq,
                "stream": given[seq]["stream"],
                "bytes": len(data.encode()),
                "data": data,
                "created_at": now,
            }
        )
    dropped = 0
    newest = rows[-1]
    if (highest is None or newest["seq"] > highest) and newest["bytes"] > limit:
        newest["data"] = _tail(newest["data"], newest["bytes"], limit)
        dropped = newest["bytes"] - len(newest["data"].encode())
        newest["bytes"] -= dropped
    conn.execute(run_output.insert(), rows)

    kept = run["output_bytes"] + sum(row["bytes"] for row in rows)
    if kept > limit:
        trimmed = _trim(conn, run_id, excess=kept - limit, hint=len(rows))
        kept -= trimmed
        dropped += trimmed
    total_dropped = run["output_dropped"] + dropped
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(output_bytes=kept, output_dropped=total_dropped)
    )
    return {**answer, "output_bytes": kept, "output_dropped": total_dropped}


def _trim(conn: Connection, run_id: int, *, excess: int, hint: int) -> int:
    """Delete the run's oldest chunks that together hold at least ``excess`` bytes (the
    fewest that do); returns the bytes deleted.

    The cut is the first seq where a running sum of the chunks' sizes, in seq order,
    reaches ``excess``; SQL computes it over the oldest chunks only (about ``hint`` of
    them make room for ``hint`` new ones; more are looked at only when needed), so a long
    run with many small chunks costs no more than a short one, and no text is read.
    """
    window = max(64, 2 * hint)
    while True:
        oldest = (
            sa.select(run_output.c.seq, run_output.c.bytes)
            .where(run_output.c.run_id == run_id)
            .order_by(run_output.c.seq)
            .limit(window)
            .subquery()
        )
        running = sa.func.sum(oldest.c.bytes).over(order_by=oldest.c.seq, rows=(None, 0))
        sums = sa.select(oldest.c.seq, running.label("running")).subquery()
        found = conn.execute(
            sa.select(sums.c.seq, sums.c.running)
            .where(sums.c.running >= excess)
            .order_by(sums.c.seq)
            .limit(1)
        ).first()
        if found is not None:
            cut, deleted = found
            break
        count, last, total = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.max(run_output.c.seq),
                sa.func.coalesce(sa.func.sum(run_output.c.bytes), 0),
            ).where(run_output.c.run_id == run_id)
        ).one()
        if count <= window:  # the counter is ahead of the rows (cannot happen): drop all
            if last is None:
                return 0
            cut, deleted = last, total
            break
        window *= 4
    conn.execute(run_output.delete().where(run_output.c.run_id == run_id, run_output.c.seq <= cut))
    return int(deleted)


def read_output(
    conn: Connection,
    run_id: int,
    *,
    after: int = -1,
    limit: int = 1000,
    stream: str | None = None,
) -> dict[str, Any]:
    """The run and its kept chunks with ``seq > after`` (of ``stream`` only, when given),
    oldest first, at most ``limit``: ``{run, chunks, next_after, output_dropped, more}``.

    The run is read before the chunks, so when it shows as finished the chunks include
    everything the daemon sent before finishing it.
    """
    run = runs_store.get_run(conn, run_id)
    query = sa.select(
        run_output.c.seq, run_output.c.stream, run_output.c.data, run_output.c.created_at
    ).where(run_output.c.run_id == run_id, run_output.c.seq > after)
    if stream is not None:
        query = query.where(run_output.c.stream == stream)
    chunks = as_dicts(conn.execute(query.order_by(run_output.c.seq).limit(limit + 1)))
    more = len(chunks) > limit
    del chunks[limit:]
    return {
        "run": run,
        "chunks": chunks,
        "next_after": chunks[-1]["seq"] if chunks else after,
        "output_dropped": run["output_dropped"],
        "more": more,
    }
