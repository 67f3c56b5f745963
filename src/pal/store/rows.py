"""Row → dict conversion shared by the store modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row


def as_dict(row: Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def as_dicts(rows: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in rows]
