"""The workbench: the page at ``GET /`` (for browsers), its static files and its one API call.

The page is a Jinja2 template with hand-written ES modules and CSS under ``static/`` (no build
step); everything it shows comes from the JSON API and ``GET /api/events``. ``GET /`` answers
API clients (no ``text/html`` in ``Accept``) with the JSON index instead.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

import pal
from pal.errors import Invalid, Unauthorized
from pal.server import access
from pal.server.api import health
from pal.server.api.fields import MAX_ID, MAX_PAGE
from pal.server.auth_failures import AuthFailures, client_address
from pal.server.deps import DB
from pal.server.responses import ORJSONResponse
from pal.store import messages as messages_store

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_PATH = "/static"
READ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,79}):([0-9]{1,19})$")

router = APIRouter(tags=["workbench"])


class Assets(StaticFiles):
    """Static files, revalidated on every load (so a new version shows without a hard
    reload), with ``.js`` as ``text/javascript`` whatever the system's MIME table says."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        if isinstance(response, FileResponse) and str(full_path).endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        return response


def install(app: FastAPI, *, templates_dir: Path = TEMPLATES, static_dir: Path = STATIC) -> None:
    """Mount the static files and load the page template (read again when it changes)."""
    app.state.templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir), autoescape=True, auto_reload=True
    )
    app.mount(STATIC_PATH, Assets(directory=static_dir, check_dir=False), name="static")


@router.get(
    "/",
    response_model=None,
    responses={200: {"content": {"text/html": {}}, "description": "the workbench or the index"}},
)
async def home(request: Request) -> Response:
    """The workbench page for browsers (``Accept: text/html``); the JSON index otherwise:
    where to find the health check, the API description and its interactive docs."""
    if "text/html" not in request.headers.get("accept", ""):
        return ORJSONResponse(health.index())
    templates: jinja2.Environment = request.app.state.templates
    static = request.scope.get("root_path", "") + STATIC_PATH
    settings = request.app.state.settings
    signed_in = _signed_in(request)
    if settings.token_required and not signed_in:
        page = templates.get_template("login.html").render(
            version=pal.__version__, static=static, why=access.why_required(settings)
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
    page = templates.get_template("workbench.html").render(
        version=pal.__version__,
        static=static,
        asset=lambda path: _asset(static, path),
        signed_in=signed_in,
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _signed_in(request: Request) -> bool:
    value = request.cookies.get(access.SESSION_COOKIE)
    return value is not None and access.valid_session(request.app.state.admin_token, value)


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=1024, description="the admin token")


@router.post("/api/workbench/login", status_code=204, response_class=Response)
async def login(body: Login, request: Request) -> Response:
    """Sign the workbench in with the admin token: sets the session cookie (HttpOnly,
    SameSite=Strict, Secure over HTTPS) for seven days. A wrong token counts as a failed
    authentication of the client's address (429 after too many)."""
    token: str = request.app.state.admin_token
    failures: AuthFailures = request.app.state.auth_failures
    address = client_address(request.scope)
    failures.check(address)
    if not hmac.compare_digest(body.token.strip().encode(), token.encode()):
        failures.record(address)
        raise Unauthorized(
            "that is not the admin token: copy it from $PAL_HOME/admin.token on the server "
            "(or PAL_ADMIN_TOKEN)"
        )
    response = Response(status_code=204)
    response.set_cookie(
        access.SESSION_COOKIE,
        access.sign_session(token),
        max_age=access.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return response


@router.post("/api/workbench/logout", response_class=RedirectResponse, status_code=303)
async def logout(request: Request) -> Response:
    """Sign the workbench out (clears the session cookie) and go back to the page."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(
        access.SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request)
    )
    return response


def _https(request: Request) -> bool:
    """Whether the browser talks HTTPS to us: directly, or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _asset(static: str, path: str) -> str:
    """The URL of a static file, with the version as a cache-busting query."""
    return f"{static}/{path.lstrip('/')}?v={pal.__version__}"


def parse_reads(reads: list[str]) -> dict[str, int]:
    """``["<room>:<last read message id>", ...]`` as a dict; :class:`Invalid` on a bad one."""
    last_read: dict[str, int] = {}
    for value in reads:
        match = READ.match(value)
        if match is None:
            raise Invalid(
                f"read must be '<room id or name>:<last read message id>' "
                f"(like 'general:120'), got {value[:100]!r}"
            )
        last_read[match[1]] = min(int(match[2]), MAX_ID)  # past the last id: all read
    return last_read


@router.get("/api/workbench/unread")
async def unread(
    db: DB,
    read: Annotated[
        list[str],
        Query(
            max_length=MAX_PAGE,
            description="'<room id or name>:<last read message id>', once per room",
            json_schema_extra={"items": {"type": "string", "pattern": READ.pattern}},
        ),
    ] = [],  # noqa: B006 (FastAPI copies defaults)
) -> dict[str, Any]:
    """How many messages each listed room has after the last one read (at most 1000);
    rooms that do not exist are left out."""
    last_read = parse_reads(read)
    return {"unread": await db.read(messages_store.unread_counts, last_read)}
