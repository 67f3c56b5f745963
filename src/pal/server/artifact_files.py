"""The files of artifacts under ``PAL_HOME/artifacts``: receiving an upload, and cleanup.

An upload streams into a temporary file in the artifacts folder (``.upload-*.part``) while
it is hashed and counted; past PAL_ARTIFACT_MAX_BYTES it stops at once (413) and the
temporary file is deleted. A complete upload is flushed to disk (fsync) and renamed to the
artifact's id, so a file named like an artifact is always whole. The row is written after
the rename; if that fails, the file is deleted again.

Cleanup (``POST /api/artifacts/cleanup``, and :func:`cleanup_forever` in the server) deletes
the files of expired and revoked artifacts (their rows stay, so their URLs answer 410), and
leftovers of uploads that died with their server: temporary files and files without a row,
once they are an hour old.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pal.config import Settings
from pal.errors import PalError
from pal.server.hub import Hub
from pal.store import artifacts as artifacts_store
from pal.store.db import Database
from pal.store.tables import utcnow

log = logging.getLogger(__name__)

PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"
WRITE_BUFFER = 1024 * 1024
"""Bytes gathered before a write to the file (each write runs in a worker thread)."""
LEFTOVER_AGE = 3600.0
"""Seconds after which a temporary file, or a file no artifact names, is a leftover."""
CLEANUP_INTERVAL = 600.0
"""Seconds between two background cleanups."""


class TooLarge(PalError):
    status = 413


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the file is over the artifact size limit of {limit:,} bytes "
        f"(PAL_ARTIFACT_MAX_BYTES on the server); upload a smaller file or raise the limit"
    )


@dataclass(frozen=True)
class Received:
    """A complete upload in its temporary file."""

    temp: Path
    size: int
    sha256: str


def artifacts_dir(settings: Settings) -> Path:
    """The artifacts folder, created owner-only (0700) if missing."""
    folder = settings.artifacts_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def receive(chunks: AsyncIterator[bytes], folder: Path, limit: int) -> Received:
    """Write ``chunks`` to a new temporary file in ``folder`` while hashing and counting;
    :class:`TooLarge` as soon as there are more than ``limit`` bytes. On any failure (too
    large, the client went away, a full disk) the temporary file is deleted."""
    temp = folder / f"{PART_PREFIX}{secrets.token_hex(8)}{PART_SUFFIX}"
    digest = hashlib.sha256()
    size = 0
    out = await asyncio.to_thread(open, temp, "xb")
    try:
        try:
            pending = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                pending += chunk
                if len(pending) >= WRITE_BUFFER:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(out.write, bytes(pending))
            await asyncio.to_thread(_flush, out)
        finally:
            await asyncio.to_thread(out.close)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Received(temp, size, digest.hexdigest())


def _flush(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())


def inside(folder: Path, name: str) -> Path:
    """``folder/name``, or ValueError when ``name`` could point elsewhere: a file name only
    (no separator, not ``.`` or ``..``, no NUL). Artifact names are ids the server made, but
    the check keeps a bad row from reaching outside the folder."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"not a file name in the artifacts folder: {name[:100]!r}")
    return folder / name


async def place(received: Received, folder: Path, name: str) -> Path:
    """Rename the upload to ``folder/name`` (atomic: the name never holds a partial file)."""
    target = inside(folder, name)

    def rename() -> None:
        os.replace(received.temp, target)
        _fsync_dir(folder)

    try:
        await asyncio.to_thread(rename)
    except BaseException:
        received.temp.unlink(missing_ok=True)
        raise
    return target


def remove_file(folder: Path, name: str) -> int:
    """Delete ``folder/name``; returns the bytes freed (0 when it was already gone, or when
    ``name`` is not a file name in the folder)."""
    try:
        target = inside(folder, name)
    except ValueError:
        log.warning(
            "artifact file name refused: %r",
            name[:100],
            extra={"action": "artifact_path_refused"},
        )
        return 0
    try:
        size = target.stat().st_size
        target.unlink()
    except FileNotFoundError:
        return 0
    return size


def _leftovers(folder: Path, db: Database, now: float) -> tuple[int, int]:
    """Delete old temporary files and old files no artifact names: ``(files, bytes)``."""
    old: dict[str, os.DirEntry[str]] = {}
    files = freed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0, 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < LEFTOVER_AGE:
                continue
        except FileNotFoundError:
            continue
        if entry.name.startswith(PART_PREFIX) and entry.name.endswith(PART_SUFFIX):
            freed += remove_file(folder, entry.name)
            files += 1
        elif entry.name.startswith(artifacts_store.ID_PREFIX):
            old[entry.name] = entry
    names = sorted(old)
    for start in range(0, len(names), 500):
        batch = names[start : start + 500]
        known = db.read_sync(artifacts_store.known_ids, batch)
        for name in batch:
            if name not in known:
                freed += remove_file(folder, name)
                files += 1
    return files, freed


async def cleanup_once(db: Database, settings: Settings, hub: Hub | None = None) -> dict[str, int]:
    """Delete the files of expired and revoked artifacts (their rows stay) and leftovers of
    failed uploads. Returns ``{"removed", "expired", "revoked", "bytes_freed",
    "leftovers"}``."""
    folder = settings.artifacts_dir
    now = utcnow()
    summary = {"removed": 0, "expired": 0, "revoked": 0, "bytes_freed": 0, "leftovers": 0}
    while True:
        batch = await db.read(artifacts_store.list_removable, now)
        if not batch:
            break
        for artifact in batch:
            summary["bytes_freed"] += await asyncio.to_thread(remove_file, folder, artifact["path"])
            summary[artifacts_store.status(artifact, now)] += 1
        summary["removed"] += len(batch)
        await db.write(artifacts_store.mark_removed, [a["id"] for a in batch], now)
    files, freed = await asyncio.to_thread(_leftovers, folder, db, time.time())
    summary["leftovers"] = files
    summary["bytes_freed"] += freed
    if summary["removed"] or files:
        log.info(
            "artifact cleanup: %d file(s) of expired or revoked artifacts and %d leftover(s) "
            "removed, %d bytes freed",
            summary["removed"],
            files,
            summary["bytes_freed"],
            extra={"action": "artifacts_cleaned", **summary},
        )
    if hub is not None and summary["removed"]:
        hub.publish("artifact", action="cleanup", removed=summary["removed"])
    return summary


async def cleanup_forever(
    db: Database, settings: Settings, hub: Hub | None = None, *, interval: float = CLEANUP_INTERVAL
) -> None:
    """Clean up every ``interval`` seconds until cancelled (expired artifacts answer 410 at
    once; this only frees their disk space). A failed cleanup is logged and the next one
    runs on schedule."""
    while True:
        await asyncio.sleep(interval)
        try:
            await cleanup_once(db, settings, hub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("artifact cleanup failed", extra={"action": "artifacts_cleanup_failed"})
