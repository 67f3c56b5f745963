"""Every error the API returns is JSON ``{"error": "<what is wrong and how to fix it>"}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from pal.errors import PalError
from pal.server.auth_failures import TooManyFailures
from pal.server.responses import ORJSONResponse

log = logging.getLogger(__name__)

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def describe_validation(errors: list[Any]) -> tuple[int, str]:
    """(status, message) for pydantic/FastAPI validation errors."""
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return 400, f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}"
    problems = []
    for e in errors:
        where = _location(tuple(e.get("loc", ())))
        msg = e.get("msg", "is invalid")
        if e.get("type") == "model_attributes_type" and where == "body":
            problems.append(
                "the request body must be a JSON object (sent as content-type: application/json)"
            )
        elif e.get("type") == "missing":
            problems.append(f"{where}: is required")
        elif e.get("type") == "extra_forbidden":
            problems.append(f"{where}: unknown field (check its spelling)")
        else:
            problems.append(f"{where}: {msg}")
    return 422, "invalid request: " + "; ".join(problems)


async def _pal_error(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, PalError)
    return ORJSONResponse({"error": exc.message}, status_code=exc.status)


async def _too_many_failures(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, TooManyFailures)
    return ORJSONResponse(
        {"error": exc.message}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
    )


async def _validation_error(_: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, message = describe_validation(list(exc.errors()))
    return ORJSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's answer when the body cannot be decoded at all (for JSON: nested deeper
        # than the parser allows).
        detail = "malformed request body: it cannot be parsed (JSON nested too deeply?)"
    elif exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint: see /openapi.json for the API"
    elif exc.status_code == 405:
        allowed = allowed_methods(request)
        detail = (
            f"method {request.method} is not allowed on {request.url.path}: it takes "
            f"{', '.join(allowed)} (see /openapi.json)"
        )
        return ORJSONResponse(
            {"error": detail}, status_code=405, headers={"Allow": ", ".join(allowed)}
        )
    return ORJSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path. Starlette's own ``Allow`` names
    only the methods of the first route that matched the path, and each method of a path is
    its own route here."""
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _integrity_error(request: Request, exc: Exception) -> ORJSONResponse:
    """A constraint the store did not turn into a domain error: the request clashed with
    what another request wrote at the same time. Nothing was written; retrying may work."""
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return ORJSONResponse(
        {"error": "the request conflicts with existing data (written concurrently?); retry it"},
        status_code=409,
    )


def database_reason(exc: Exception) -> str:
    """The driver's own first line for a database error ("database or disk is full")."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _database_unavailable(request: Request, exc: Exception) -> ORJSONResponse:
    """The database could not do the request: its disk is full or read-only, or it cannot be
    reached. The transaction was rolled back; the same request can be retried once that is
    fixed (``Retry-After``), and daemons retry 503s by themselves."""
    reason = database_reason(exc)
    log.error(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        reason,
        extra={"action": "database_unavailable"},
    )
    return ORJSONResponse(
        {
            "error": f"the database cannot do this request now ({reason}); "
            "free disk space, make the database writable or bring it back, then retry"
        },
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> ORJSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ORJSONResponse(
        {"error": "internal server error; the server log has the details"}, status_code=500
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(PalError, _pal_error)
    app.add_exception_handler(TooManyFailures, _too_many_failures)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
