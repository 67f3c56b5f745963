"""ASGI middleware (pure ASGI: no per-request task or body copy)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

ARTIFACT_UPLOAD = "/api/artifacts"


class DefaultJSONContentType:
    """Treat an API request body sent without a content-type, or as curl's default
    ``application/x-www-form-urlencoded``, as JSON: the API has no form endpoints, and
    ``curl -d '{...}'`` then works as people expect. An artifact upload is left alone: its
    body is the file, and its content-type is the file's type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PATCH", "PUT")
            and not scope["path"].endswith(ARTIFACT_UPLOAD)
        ):
            headers = [(n, v) for n, v in scope["headers"] if n != b"content-type"]
            given = len(headers) != len(scope["headers"])
            kinds = [v for n, v in scope["headers"] if n == b"content-type"]
            if not given or kinds[0].startswith(b"application/x-www-form-urlencoded"):
                scope = dict(scope)
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)
