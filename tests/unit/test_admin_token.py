"""Where the admin token comes from: PAL_ADMIN_TOKEN, else ``$PAL_HOME/admin.token``, made
owner-only by the server on its first start and read by the console."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pal.admin_token import TOKEN_PREFIX, console_token, ensure_token
from pal.config import ConfigError, load_settings


def settings_for(home: Path, **env: str):
    return load_settings({"PAL_HOME": str(home), **env})


def test_the_first_start_creates_an_owner_only_token_file_and_later_starts_reuse_it(tmp_path):
    settings = settings_for(tmp_path / "home")
    token = ensure_token(settings)
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    path = settings.admin_token_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
    assert ensure_token(settings) == token
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_loose_token_file_is_tightened(tmp_path):
    settings = settings_for(tmp_path)
    token = ensure_token(settings)
    settings.admin_token_file.chmod(0o644)
    assert ensure_token(settings) == token
    assert stat.S_IMODE(settings.admin_token_file.stat().st_mode) == 0o600


def test_pal_admin_token_wins_and_writes_no_file(tmp_path):
    settings = settings_for(tmp_path, PAL_ADMIN_TOKEN="my-own-token-0123456789")
    assert ensure_token(settings) == "my-own-token-0123456789"
    assert not settings.admin_token_file.exists()


@pytest.mark.parametrize("bad", ["short", "has a space in it 0123456789", "x" * 600])
def test_an_unusable_pal_admin_token_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="PAL_ADMIN_TOKEN must be"):
        ensure_token(settings_for(tmp_path, PAL_ADMIN_TOKEN=bad))


@pytest.mark.parametrize("content", ["", "tiny\n", "\xff\xfe".encode("latin-1").decode("latin-1")])
def test_a_corrupt_token_file_is_a_config_error_that_says_what_to_do(tmp_path, content):
    settings = settings_for(tmp_path)
    settings.admin_token_file.write_text(content)
    with pytest.raises(ConfigError, match="delete it and restart the server"):
        ensure_token(settings)


def test_the_console_sends_the_env_token_else_the_file_else_none(tmp_path):
    home = tmp_path / "home"
    assert console_token({"PAL_HOME": str(home)}) is None
    token = ensure_token(settings_for(home))
    assert console_token({"PAL_HOME": str(home)}) == token
    assert console_token({"PAL_HOME": str(home), "PAL_ADMIN_TOKEN": " other "}) == "other"
    (home / "admin.token").write_text("bad\n")
    assert console_token({"PAL_HOME": str(home)}) is None  # the server's 401 says where to look
