"""The local API token file: made 0600 on first start, reused, tightened, overridden."""

from __future__ import annotations

import stat
from pathlib import Path

from pal.config import load_settings
from pal.daemon.token import local_api_token, token_file_token


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_file_is_created_owner_only_in_a_new_home(tmp_path: Path) -> None:
    settings = load_settings({"PAL_HOME": str(tmp_path / "home")})
    token = local_api_token(settings)
    path = tmp_path / "home" / "daemon.token"
    assert path.read_text().strip() == token
    assert len(token) >= 40
    assert mode(path) == 0o600
    assert mode(tmp_path / "home") == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["daemon.token"]  # no temporary left


def test_token_file_is_reused_across_starts(tmp_path: Path) -> None:
    settings = load_settings({"PAL_HOME": str(tmp_path)})
    assert local_api_token(settings) == local_api_token(settings)


def test_looser_token_file_permissions_are_fixed(tmp_path: Path) -> None:
    path = tmp_path / "daemon.token"
    path.write_text("kept-token\n")
    path.chmod(0o644)
    assert token_file_token(path) == "kept-token"
    assert mode(path) == 0o600


def test_empty_token_file_gets_a_new_token(tmp_path: Path) -> None:
    path = tmp_path / "daemon.token"
    path.write_text("")
    path.chmod(0o600)
    token = token_file_token(path)
    assert token and path.read_text().strip() == token
    assert mode(path) == 0o600


def test_lock_daemon_token_wins_and_writes_no_file(tmp_path: Path) -> None:
    settings = load_settings({"PAL_HOME": str(tmp_path / "home"), "LOCK_DAEMON_TOKEN": "given"})
    assert local_api_token(settings) == "given"
    assert not (tmp_path / "home").exists()
