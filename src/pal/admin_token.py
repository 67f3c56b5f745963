"""The admin token (DESIGN.md section 9): PAL_ADMIN_TOKEN, else ``$PAL_HOME/admin.token``.

The server creates the file (0600) on its first start; the console reads it and sends the
token with every request. :mod:`pal.server.access` decides when the server asks for it.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pal.config import TOKEN_FILE, ConfigError, Settings, ensure_home, home_dir

log = logging.getLogger(__name__)

TOKEN_PREFIX = "pal_admin_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def read_token_file(path: Path) -> str | None:
    """The token in ``path``, or None when there is no file; :class:`ConfigError` when the
    file cannot be read or holds no usable token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin token file {path}: {exc}") from None
    if not _usable(token):
        raise ConfigError(
            f"the admin token file {path} holds no usable token (one line of printable "
            "ASCII, 16-512 characters): delete it and restart the server to create a new one"
        )
    return token


def _usable(token: str) -> bool:
    return 16 <= len(token) <= 512 and all(33 <= ord(c) < 127 for c in token)


def ensure_token(settings: Settings) -> str:
    """PAL_ADMIN_TOKEN, else the token file, created owner-only (0600) when missing."""
    if settings.admin_token is not None:
        if not _usable(settings.admin_token):
            raise ConfigError(
                "PAL_ADMIN_TOKEN must be one line of printable ASCII without spaces, "
                "16-512 characters: generate one with `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`"
            )
        return settings.admin_token
    path = settings.admin_token_file
    existing = read_token_file(path)
    if existing is not None:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return existing
    ensure_home(settings.home)
    token = new_token()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, path)  # fails if another server created it meanwhile
    except FileExistsError:
        return read_token_file(path) or token
    finally:
        temporary.unlink(missing_ok=True)
    log.info("created the admin token in %s", path, extra={"action": "admin_token_created"})
    return token


def console_token(env: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """The token the console sends: PAL_ADMIN_TOKEN, else the token file's (under ``home``,
    default PAL_HOME), else none (a server that asks for it then says where to find it)."""
    env = os.environ if env is None else env
    explicit = (env.get("PAL_ADMIN_TOKEN") or "").strip()
    if explicit:
        return explicit
    try:
        return read_token_file((home or home_dir(env)) / TOKEN_FILE)
    except ConfigError:
        return None
