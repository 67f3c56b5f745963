"""Artifacts: upload a file (the raw request body), list, show, revoke and clean them up;
the content is served at ``GET /artifacts/<id>``, a capability URL (the id is random).

The content is served so that it cannot act for the workbench: a Content-Security-Policy
``sandbox`` without ``allow-same-origin`` makes an HTML artifact an opaque origin (no access
to the workbench's cookies, storage or API), ``connect-src 'none'`` and ``form-action
'none'`` stop it from sending requests, ``nosniff`` keeps browsers to the declared type, and
``no-referrer`` keeps the capability URL out of other sites' logs. docs/artifacts.md says why
each header is there.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import FileResponse, Response

from pal.errors import Invalid, NotFound, PalError
from pal.server.api.fields import ARTIFACT_SEGMENT, MAX_ID, Limit
from pal.server.artifact_files import (
    artifacts_dir,
    cleanup_once,
    inside,
    place,
    receive,
    too_large,
)
from pal.server.auth import bearer
from pal.server.deps import DB, HubDep, SettingsDep
from pal.server.hub import Hub
from pal.server.responses import ORJSONResponse
from pal.store import artifacts as artifacts_store
from pal.store import computers as computers_store
from pal.store.tables import utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["artifacts"])

MAX_TTL = 10 * 365 * 86_400
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_PARAMETER = r"\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\x00-\x1f\x7f]*\")"
MIME = re.compile(rf"^({_TOKEN})/({_TOKEN})((?:{_PARAMETER})*)\s*$")
# What _title accepts, for /openapi.json (the check itself stays in _title, for its message).
TITLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
ArtifactId = Annotated[str, Path(max_length=40, pattern=r"^art_[A-Za-z0-9_-]{1,36}$")]
AgentFilter = Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Before = Annotated[
    str | None,
    Query(max_length=40, pattern=r"^art_[A-Za-z0-9_-]{1,36}$", description="an artifact id"),
]

# The headers of every content answer; docs/artifacts.md explains each one.
CONTENT_POLICY = "; ".join(
    [
        "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads",
        "default-src 'none'",
        "script-src 'unsafe-inline' 'unsafe-eval' data: blob:",
        "style-src 'unsafe-inline' data: blob:",
        "img-src data: blob:",
        "media-src data: blob:",
        "font-src data:",
        "connect-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)
CONTENT_HEADERS = {
    "content-security-policy": CONTENT_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "private, no-cache",
}


class Gone(PalError):
    status = 410


class Unsupported(PalError):
    status = 415


def parse_mime(value: str) -> str | None:
    """``value`` as a media type (type and subtype lower-cased, parameters kept), or None
    when it is not ``type/subtype[; name=value]...``."""
    match = MIME.match(value.strip()) if len(value) <= 255 else None
    if match is None:
        return None
    params = "; ".join(p.strip() for p in match[3].split(";") if p.strip())
    return f"{match[1].lower()}/{match[2].lower()}" + (f"; {params}" if params else "")


def _mime(given: str | None, content_type: str | None) -> str:
    if given is not None:
        mime = parse_mime(given)
        if mime is None:
            raise Invalid(
                f"mime {given[:100]!r} is not a media type: use type/subtype, like text/html, "
                "application/json or image/png (parameters such as '; charset=utf-8' may follow)"
            )
        return mime
    sent = parse_mime(content_type or "")
    if sent is None or sent.startswith("application/x-www-form-urlencoded"):
        return "application/octet-stream"  # curl --data-binary's default says nothing
    return sent


def _title(value: str) -> str:
    if not value.strip():
        raise Invalid("title must not be only whitespace: give the artifact a name")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise Invalid("title must not contain control characters (newlines, tabs, NUL ...)")
    return value.strip()


def content_url(request: Request, artifact_id: str) -> str:
    """The absolute URL of the artifact's content, as the caller reaches this server."""
    return f"{str(request.base_url).rstrip('/')}/artifacts/{artifact_id}"


def public(
    request: Request, artifact: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """An artifact as the API shows it: without its file name, with ``status`` and ``url``."""
    shown = {k: v for k, v in artifact.items() if k != "path"}
    shown["status"] = artifacts_store.status(artifact, now)
    shown["url"] = content_url(request, artifact["id"])
    return shown


def publish_artifact(hub: Hub, artifact: dict[str, Any], action: str) -> None:
    hub.publish(
        "artifact",
        action=action,
        artifact_id=artifact["id"],
        created_by=artifact["created_by"],
        room_id=artifact["room_id"],
    )


async def _computer_id(request: Request, db: DB) -> str | None:
    """The computer whose key the request carries (a daemon forwarding an upload), if any."""
    checked = request.scope.get("state", {}).get("pal_computer")
    if checked is not None:  # the admin-token check (server/access.py) looked it up already
        return str(checked["id"])
    credential = bearer(request)
    if credential is None:
        return None
    computer = await db.read(computers_store.find_by_credential, credential)
    return None if computer is None or computer["status"] == "revoked" else str(computer["id"])


@router.post(
    "/api/artifacts",
    status_code=201,
    responses={
        413: {"description": "the file is over PAL_ARTIFACT_MAX_BYTES"},
        415: {"description": "a multipart form was sent instead of the file's bytes"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the file's bytes, as they are, with any content type but a "
            "multipart form's (415)",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary", "minLength": 1}
                }
            },
        }
    },
)
async def upload_artifact(
    request: Request,
    db: DB,
    hub: HubDep,
    settings: SettingsDep,
    title: Annotated[
        str,
        Query(
            min_length=1,
            max_length=200,
            description="a name for it",
            json_schema_extra={"pattern": TITLE_PATTERN},
        ),
    ],
    mime: Annotated[
        str | None,
        Query(
            max_length=255,
            description="its media type; default: the content-type sent",
            json_schema_extra={"pattern": r"^\s*" + MIME.pattern[1:]},
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        Query(ge=0, le=MAX_TTL, description="seconds it is served; 0: until revoked"),
    ] = None,
    created_by: AgentFilter = None,
    room: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
    run_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """Store the request body as an artifact (201) and answer it with its content URL. The
    body streams to disk and is refused (413) as soon as it is over PAL_ARTIFACT_MAX_BYTES."""
    title = _title(title)
    content_type = request.headers.get("content-type")
    if content_type and content_type.lower().startswith("multipart/"):
        raise Unsupported(
            "send the file's bytes as the request body (curl --data-binary @FILE, or "
            "pal cli http file), not a multipart form"
        )
    media_type = _mime(mime, content_type)
    limit = settings.artifact_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    # Check the names first, so a typo is reported before the whole file is sent.
    await db.read(
        lambda conn: artifacts_store.resolve_refs(
            conn, created_by=created_by, room=room, run_id=run_id
        )
    )
    computer_id = await _computer_id(request, db)
    folder = artifacts_dir(settings)
    received = await receive(request.stream(), folder, limit)
    if received.size == 0:
        received.temp.unlink(missing_ok=True)
        raise Invalid(
            "the request body is empty: send the file's bytes as the body "
            "(an empty file cannot be an artifact)"
        )
    artifact_id = artifacts_store.new_artifact_id()
    target = await place(received, folder, artifact_id)
    ttl = settings.artifact_ttl if ttl is None else ttl
    now = utcnow()
    try:
        artifact = await db.write(
            lambda conn: artifacts_store.insert_artifact(
                conn,
                artifact_id=artifact_id,
                title=title,
                mime=media_type,
                size=received.size,
                sha256=received.sha256,
                path=artifact_id,
                created_by=created_by,
                room=room,
                run_id=run_id,
                computer_id=computer_id,
                expires_at=now + timedelta(seconds=ttl) if ttl else None,
                now=now,
            )
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    log.info(
        "artifact %s stored: %r, %s, %d bytes",
        artifact_id,
        title,
        media_type,
        received.size,
        extra={
            "action": "artifact_created",
            "artifact_id": artifact_id,
            "created_by": created_by,
            "run_id": run_id,
        },
    )
    publish_artifact(hub, artifact, "created")
    return {"artifact": public(request, artifact, now)}


@router.get("/api/artifacts")
async def list_artifacts(
    request: Request, db: DB, settings: SettingsDep, before: Before = None, limit: Limit = 50
) -> dict[str, Any]:
    """Artifacts newest first (``before``: the next page after that artifact), and the
    server's limits: ``max_bytes`` (PAL_ARTIFACT_MAX_BYTES) and ``default_ttl``."""
    items = await db.read(
        lambda conn: artifacts_store.list_artifacts(conn, before=before, limit=limit)
    )
    now = utcnow()
    return {
        "artifacts": [public(request, a, now) for a in items],
        "max_bytes": settings.artifact_max_bytes,
        "default_ttl": settings.artifact_ttl,
    }


@router.get("/api/workbench/artifacts")
async def workbench_artifacts(
    request: Request, db: DB, before: Before = None, limit: Limit = 100
) -> dict[str, Any]:
    """The workbench's list: newest first, each with ``status`` (active, expired or
    revoked), ``url``, ``size``, ``created_by``, ``room`` (its name) and ``expires_at``."""
    items = await db.read(
        lambda conn: artifacts_store.list_artifacts(conn, before=before, limit=limit)
    )
    now = utcnow()
    return {"artifacts": [public(request, a, now) for a in items]}


@router.post("/api/artifacts/cleanup")
async def cleanup(db: DB, hub: HubDep, settings: SettingsDep) -> dict[str, Any]:
    """Delete the files of expired and revoked artifacts now (their URLs keep answering
    410): ``{"removed", "expired", "revoked", "bytes_freed", "leftovers"}``."""
    return await cleanup_once(db, settings, hub)


@router.get(f"/api/artifacts/{{artifact_id:{ARTIFACT_SEGMENT}}}")
async def get_artifact(request: Request, artifact_id: ArtifactId, db: DB) -> dict[str, Any]:
    """One artifact's metadata, with its status and URL."""
    artifact = await db.read(artifacts_store.get_artifact, artifact_id)
    return {"artifact": public(request, artifact)}


@router.post("/api/artifacts/{artifact_id}/revoke")
async def revoke_artifact(
    request: Request, artifact_id: ArtifactId, db: DB, hub: HubDep
) -> dict[str, Any]:
    """Stop serving the artifact, for good (its URL answers 410); revoking it again answers
    the same. Its file is deleted by the next cleanup."""
    artifact, changed = await db.write(artifacts_store.revoke_artifact, artifact_id)
    if changed:
        log.info(
            "artifact %s revoked",
            artifact_id,
            extra={"action": "artifact_revoked", "artifact_id": artifact_id},
        )
        publish_artifact(hub, artifact, "revoked")
    return {"artifact": public(request, artifact)}


def content_disposition(title: str, mime: str) -> str:
    """``inline`` with a file name made from the title (and an extension for the type when
    the title has none): an ASCII ``filename`` and the exact one as ``filename*``."""
    name = title
    if "." not in name.rsplit("/", 1)[-1]:
        name += mimetypes.guess_extension(mime.split(";", 1)[0].strip()) or ""
    ascii_name = re.sub(r"[^A-Za-z0-9 ._()-]", "_", name).strip() or "artifact"
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _gone(artifact: dict[str, Any], state: str) -> Gone:
    when = artifact["revoked_at"] if state == "revoked" else artifact["expires_at"]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Gone(f"artifact {artifact['id']} was {state} at {stamp}; it is no longer served")


@router.head("/artifacts/{artifact_id}", include_in_schema=False)
@router.get(
    "/artifacts/{artifact_id}",
    response_class=FileResponse,
    responses={
        200: {"content": {"*/*": {}}, "description": "the file, with its media type"},
        410: {"description": "the artifact expired or was revoked"},
    },
)
async def artifact_content(
    artifact_id: Annotated[str, Path(max_length=100)], db: DB, settings: SettingsDep
) -> Response:
    """The artifact's content (a capability URL: anyone with the link can read it), served
    inside a sandbox; 410 once it expired or was revoked."""
    artifact = await db.read(artifacts_store.find_artifact, artifact_id)
    if artifact is None:
        raise NotFound("artifact", artifact_id)
    state = artifacts_store.status(artifact)
    if state != "active":
        return ORJSONResponse(
            {
                "error": _gone(artifact, state).message,
                "status": state,
                "expires_at": artifact["expires_at"],
                "revoked_at": artifact["revoked_at"],
            },
            status_code=410,
        )
    try:
        path = inside(settings.artifacts_dir, artifact["path"])
        stat = path.stat()
    except (FileNotFoundError, ValueError):
        raise Gone(f"artifact {artifact_id}'s file is missing from the server") from None
    headers = {
        **CONTENT_HEADERS,
        "content-disposition": content_disposition(artifact["title"], artifact["mime"]),
    }
    return FileResponse(path, media_type=artifact["mime"], headers=headers, stat_result=stat)
