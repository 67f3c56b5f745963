"""Validated field types shared by the routers (the limits are documented in docs/api.md)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from starlette.convertors import Convertor, register_url_convertor

MAX_CONTENT_CHARS = 65_536
MAX_PAGE = 1000
# Ids are 64-bit signed integers on both backends; a larger number can name nothing.
MAX_ID = 2**63 - 1
MAX_JSON_DEPTH = 32


def _not_reserved(key: str) -> str:
    if key == "onboard":
        raise ValueError("'onboard' cannot be an agent key (POST /api/agents/onboard is taken)")
    return key


# The pattern comes before the validator: after it, pydantic leaves it out of /openapi.json.
AgentKey = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$",
        description="1-40 letters, digits, '-' or '_', starting with a letter or digit; "
        "not 'onboard'",
        examples=["codex"],
        json_schema_extra={"pattern": r"^(?!onboard$)[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"},
    ),
    AfterValidator(_not_reserved),
]


def _not_an_id(name: str) -> str:
    if name.startswith("room_"):
        raise ValueError("room names must not start with 'room_' (that prefix is for room ids)")
    return name


# The pattern comes before the validator: after it, pydantic leaves it out of /openapi.json.
RoomName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$",
        description="1-80 letters, digits, '.', '-' or '_'; must not start with 'room_'",
        examples=["general"],
        json_schema_extra={"pattern": r"^(?!room_)[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"},
    ),
    AfterValidator(_not_an_id),
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


def _whole(value: Any) -> Any:
    # JSON (and JSON Schema's "integer") does not tell 5.0 from 5; strings and booleans stay
    # refused by strict=True.
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


WHOLE = BeforeValidator(_whole)
"""With ``strict=True``: an integer in a JSON body, also when written ``5.0``."""
# A positive id in a JSON body: a real integer (not a string or a boolean) that fits 64 bits.
Id = Annotated[int, Field(ge=1, le=MAX_ID, strict=True), WHOLE]


def _storable(value: Any, depth: int = 0) -> None:
    """Raise ValueError for JSON the store or the response renderer cannot hold."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _storable(key, depth + 1)
            _storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable(item, depth + 1)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not -(2**63) <= value <= 2**64 - 1:
        raise ValueError("holds an integer that does not fit in 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds NaN or an infinite number; use a finite number")
    elif isinstance(value, str) and "\x00" in value:
        raise ValueError("holds a NUL (\\u0000) character")


def _storable_object(value: dict[str, Any]) -> dict[str, Any]:
    _storable(value)
    return value


# A free-form JSON object (room settings, agent config) that every backend can store.
JSONObject = Annotated[dict[str, Any], AfterValidator(_storable_object)]


class Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; reject it on every backend so both behave alike.
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in items):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


class _Segment(Convertor[str]):
    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def segment_except(name: str, *reserved: str) -> str:
    """Register a path convertor ``name`` for one segment that is none of ``reserved``, and
    return it for a path (``{key:<name>}``). Where a literal path (``POST
    /api/agents/onboard``) sits beside a templated one (``GET /api/agents/{key}``), the
    literal word then does not reach the templated routes: ``GET /api/agents/onboard`` is a
    405 that names POST, as /openapi.json says, not a lookup of an agent called onboard."""

    class SegmentExcept(_Segment):
        regex = "".join(f"(?!{re.escape(word)}$)" for word in reserved) + "[^/]+"

    register_url_convertor(name, SegmentExcept())
    return name


AGENT_SEGMENT = segment_except("agent_key", "onboard")
COMPUTER_SEGMENT = segment_except("computer_id", "provision", "connect")
ARTIFACT_SEGMENT = segment_except("artifact_id", "cleanup")
