"""This machine's computer for ``pal up``, saved in ``$PAL_HOME/computer.json`` (0600).

The file holds ``{"id", "api_key", "server_url"}``. A saved key is checked by connecting
with it; when the server refuses it (401: revoked, rotated, or a different database), a new
computer is provisioned and saved instead.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TypedDict

from pal.admin_token import console_token
from pal.client import ApiError, ServerClient
from pal.config import ensure_home

FILE_NAME = "computer.json"


class SavedComputer(TypedDict):
    id: str
    api_key: str
    server_url: str


def ensure_computer(home: Path, server_url: str) -> tuple[SavedComputer, str]:
    """The computer for this machine on ``server_url``, and a note saying where it came
    from. Raises :class:`pal.client.ClientError` when the server refuses or is gone."""
    ensure_home(home)
    path = home / FILE_NAME
    if path.exists() and not path.is_file():
        # Checked before provisioning, so a path that can never be saved to does not leave
        # a new computer on the server at every start.
        raise IsADirectoryError(f"{path} is not a file: remove it so pal up can save there")
    saved = load_computer(path)
    unusable = saved is None and path.exists()
    refused = None
    if saved is not None:
        try:
            with ServerClient(server_url, token=saved["api_key"]) as client:
                connected = client.connect_computer()
        except ApiError as exc:
            if exc.status != 401:
                raise
            refused = exc.message
        else:
            computer = SavedComputer(
                id=connected["computer"]["id"], api_key=saved["api_key"], server_url=server_url
            )
            save_computer(path, computer)
            return computer, f"saved in {path}"
    name = machine_name()
    with ServerClient(server_url, token=console_token(home=home)) as client:
        made = client.provision_computer(name, server_url=server_url)
    computer = SavedComputer(
        id=made["computer"]["id"], api_key=made["api_key"], server_url=server_url
    )
    save_computer(path, computer)
    note = f"new, named {name!r}; key saved in {path}"
    if refused is not None:
        note += f"; the key saved before was refused: {refused}"
    elif unusable:
        note += (
            f"; {path} was unreadable or malformed, so its computer (if any) was not reused:"
            " revoke it with `pal console computers revoke`"
        )
    return computer, note


def machine_name() -> str:
    """The computer name ``pal up`` provisions: this machine's host name."""
    return socket.gethostname().strip()[:120] or "pal computer"


def load_computer(path: Path) -> SavedComputer | None:
    """The saved computer, or None when the file is missing or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if not all(isinstance(data.get(k), str) and data[k] for k in ("id", "api_key")):
        return None
    return SavedComputer(
        id=data["id"], api_key=data["api_key"], server_url=str(data.get("server_url") or "")
    )


def save_computer(path: Path, computer: SavedComputer) -> None:
    """Write ``computer`` to ``path`` owner-only (0600), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(computer), out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
