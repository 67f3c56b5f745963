"""The local API's bearer token: LOCK_DAEMON_TOKEN, or ``$PAL_HOME/daemon.token``.

The file is made on the daemon's first start, owner-only (0600), and reused afterwards, so
``pal cli`` keeps working across daemon restarts. It is created atomically: written to a
private temporary file, then hard-linked into place, so two daemons starting together
agree on one token and nobody ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from pal.config import Settings, ensure_home

MODE = 0o600


def new_token() -> str:
    return secrets.token_urlsafe(32)


def usable(token: str) -> bool:
    """Whether ``token`` can travel in an ``Authorization`` header: printable ASCII, no
    spaces (what :func:`new_token` makes)."""
    return all("!" <= c <= "~" for c in token)


def unusable_reason(where: str) -> str:
    return f"{where} is not a usable token: use printable ASCII without spaces"


class TokenFileError(Exception):
    """The token file exists but holds no usable token (not text)."""


def _read(path: Path) -> str | None:
    if path.stat().st_mode & 0o077:
        path.chmod(MODE)  # tighten a file someone made readable by others
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(
            f"{path} is not a token (not UTF-8 text): delete it to have a new one made, "
            "or set LOCK_DAEMON_TOKEN"
        ) from None
    if not usable(token):
        raise TokenFileError(
            unusable_reason(f"the content of {path}")
            + "; delete the file to have a new one made, or set LOCK_DAEMON_TOKEN"
        )
    return token or None


def _create(path: Path) -> str:
    """Write a new token to ``path`` unless another process got there first; returns the
    token the file holds afterwards."""
    token = new_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read(path)
            if existing is not None:
                return existing
            os.replace(tmp, path)  # an empty file: ours replaces it
        except OSError:  # no hard links here (some filesystems): last writer wins
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return token


def token_file_token(path: Path) -> str:
    """The token in ``path``, created (0600) if missing or empty; looser modes are fixed."""
    ensure_home(path.parent)
    try:
        existing = _read(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        return existing
    return _create(path)


def local_api_token(settings: Settings) -> str:
    """The token the local API wants: LOCK_DAEMON_TOKEN if set, else the token file's."""
    if settings.daemon_token:
        if not usable(settings.daemon_token):
            raise TokenFileError(unusable_reason("LOCK_DAEMON_TOKEN"))
        return settings.daemon_token
    return token_file_token(settings.daemon_token_file)


def is_private(path: Path) -> bool:
    """True when only the owner can read or write ``path``."""
    return not stat.S_IMODE(path.stat().st_mode) & 0o077
