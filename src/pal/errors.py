"""Domain errors shared by the store, the server and the clients.

The server turns each into an HTTP status with ``{"error": message}``; clients print the
message and exit non-zero.
"""

from __future__ import annotations


class PalError(Exception):
    """Base class: ``status`` is the HTTP status the server answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(PalError):
    """A named room, agent, message, ... does not exist."""

    status = 404

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(PalError):
    """The request clashes with current state (duplicate name, claim held elsewhere, ...)."""

    status = 409


class Invalid(PalError):
    """The request is well-formed but asks for something that cannot be done."""

    status = 422


class Unauthorized(PalError):
    """No credential, or one the server does not accept (wrong, revoked or rotated)."""

    status = 401


class Forbidden(PalError):
    """The credential is valid but does not allow this (another computer's resource)."""

    status = 403
