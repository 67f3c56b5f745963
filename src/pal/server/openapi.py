"""The error answers in ``/openapi.json``: what every operation may answer besides success.

FastAPI describes only the success answer and a 422 shaped like its own validation error
(``{"detail": [...]}``), but every error pal sends is ``{"error": "<what is wrong>"}``
(server/errors.py). :func:`install` makes the description say so, operation by operation:

* 422 (a request that breaks the rules) and 400 (a body that is not JSON) where there is
  something to validate;
* 401, 403 and 429 (no, a wrong or a refused credential, too many failed ones) on every path
  that the admin token guards (server/access.py) and on the workbench's sign-in;
* 404 (something the request names does not exist) on every API operation;
* 409 (it clashes with existing data) on every operation that writes.

Answers only some operations give (200 for an update on a create, 410, 413, 415, 502) are
declared on those operations themselves. The schemathesis suite (tests/fuzz/) checks every
answer against this description.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pal.server import access

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what is wrong and how to fix it"}},
    "required": ["error"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

DESCRIPTIONS = {
    400: "the body cannot be parsed (malformed JSON)",
    401: "no credential, or one that is not valid",
    403: "the credential may not do this",
    404: "something the request names does not exist",
    409: "the request conflicts with existing data",
    422: "the request breaks a rule: the message says which, and how to fix it",
    429: "too many failed sign-ins from this address: wait for Retry-After seconds",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until this address may try again",
        "schema": {"type": "integer"},
    }
}
UPDATED: dict[int | str, dict[str, Any]] = {
    200: {"description": "it existed already: updated, or answered as it is"}
}
"""``responses=`` of a create that answers 200 when the thing existed."""
WRITES = ("post", "put", "patch", "delete")
GUARDED_PUBLIC = ("/api/workbench/login",)  # public, but it checks the admin token itself


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response object for a JSON ``{"error": ...}`` answer."""
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS.get(status, "an error"),
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status == 429:
        response["headers"] = RETRY_AFTER
    return response


def _statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    statuses = []
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.append(422)
    if "requestBody" in operation:
        statuses.append(400)
    if not access.PUBLIC.match(path) or path in GUARDED_PUBLIC:
        statuses += [401, 403, 429]
    if path.startswith("/api/") or path.startswith("/artifacts/"):
        statuses.append(404)
        if method in WRITES:
            statuses.append(409)
    return statuses


def describe_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the error answers of every operation in ``schema`` (changed in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in _statuses(path, method, operation):
                declared = responses.get(str(status))
                if declared is None or "HTTPValidationError" in str(declared):
                    responses[str(status)] = error_response(status)
            for code, declared in list(responses.items()):
                if code[0] in "45" and "content" not in declared:
                    responses[code] = error_response(int(code), declared.get("description"))
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) declare the error answers."""
    describe = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(describe())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
