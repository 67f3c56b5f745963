"""What the fault tests read back after a fault: every page of a listing, the SQLite file's
own checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx


def every_page(http: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """All of ``GET path`` (a listing paged with ``after``/``limit`` on ids), oldest first."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        response = http.get(path, params={**params, "after": after, "limit": 1000})
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        page: list[dict[str, Any]] = response.json()[key]
        found += page
        if len(page) < 1000:
            return found
        after = page[-1]["id"]


def sqlite_problems(path: Path) -> list[str]:
    """What SQLite finds wrong in the file (``integrity_check``, ``foreign_key_check``); empty
    when it is sound. Read-only, so it can run next to a live server."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
        problems += [f"foreign key: {row}" for row in conn.execute("PRAGMA foreign_key_check")]
        return problems
    finally:
        conn.close()
