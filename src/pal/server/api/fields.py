"""Validated field types shared by the routers (the limits are documented in docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_CONTENT_CHARS = 65_536
MAX_PAGE = 1000

AgentKey = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$",
        description="1-40 letters, digits, '-' or '_', starting with a letter or digit",
        examples=["codex"],
    ),
]
def _not_an_id(name: str) -> str:
    if name.startswith("room_"):
        raise ValueError("room names must not start with 'room_' (that prefix is for room ids)")
    return name


RoomName = Annotated[
    str,
    AfterValidator(_not_an_id),
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$",
        description="1-80 letters, digits, '.', '-' or '_'; must not start with 'room_'",
        examples=["general"],
    ),
]
Sender = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        pattern=r"^\S(.*\S)?$",
        description="who wrote it: a person's name or an agent key",
        examples=["alice"],
    ),
]
Content = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CONTENT_CHARS,
        pattern=r"\S",
        description=f"message text, 1-{MAX_CONTENT_CHARS} characters, not only whitespace",
    ),
]
Mode = Literal["mentions", "all", "periodic", "muted", "off"]
Runtime = Literal["codex", "claude", "command", "neeko", "coco"]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE)]


class Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
