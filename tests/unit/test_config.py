"""Settings: the seed's variable names and defaults, and a clear error for a bad value."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pal.config import ConfigError, ensure_home, load_settings, resolve_server_url


@pytest.fixture
def home_dir(tmp_path, monkeypatch) -> Path:
    """A fake ``~`` so the default PAL_HOME never touches the real one."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_config_defaults(home_dir):
    settings = load_settings({})
    assert settings.home == home_dir / ".pal"
    assert settings.db_url == f"sqlite:///{home_dir / '.pal' / 'lock.sqlite'}"
    assert settings.is_sqlite
    assert settings.host == "127.0.0.1"
    assert settings.port == 4127
    assert settings.server_url == "http://127.0.0.1:4127"
    assert settings.daemon_url == "http://127.0.0.1:4137"
    assert settings.lark_config == home_dir / ".pal" / "lark.json"
    assert settings.reaction_emoji == "Typing"


def test_config_pal_home_moves_the_database_and_lark_config(tmp_path):
    settings = load_settings({"PAL_HOME": str(tmp_path / "demo")})
    assert settings.home == tmp_path / "demo"
    assert settings.db_url == f"sqlite:///{tmp_path / 'demo' / 'lock.sqlite'}"
    assert settings.lark_config == tmp_path / "demo" / "lark.json"


def test_config_pal_home_expands_tilde(home_dir):
    assert load_settings({"PAL_HOME": "~/elsewhere"}).home == home_dir / "elsewhere"


def test_config_empty_values_mean_default(home_dir):
    settings = load_settings({"PAL_HOME": "", "PAL_DB": "", "PAL_PORT": "", "PAL_HOST": ""})
    assert settings.home == home_dir / ".pal"
    assert settings.port == 4127
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://u:p@db:5432/pal", "postgresql+psycopg://u:p@db:5432/pal"),
        ("postgres://u@db/pal", "postgresql+psycopg://u@db/pal"),
        ("postgresql+psycopg://u@db/pal", "postgresql+psycopg://u@db/pal"),
        ("sqlite:////var/pal.sqlite", "sqlite:////var/pal.sqlite"),
    ],
)
def test_config_pal_db_urls(value, expected, tmp_path):
    settings = load_settings({"PAL_HOME": str(tmp_path), "PAL_DB": value})
    assert settings.db_url == expected
    assert settings.is_sqlite == expected.startswith("sqlite")


def test_config_pal_db_file_path_is_sqlite(tmp_path, home_dir):
    assert load_settings({"PAL_DB": str(tmp_path / "x.db")}).db_url == (
        f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert load_settings({"PAL_DB": "~/y.db"}).db_url == f"sqlite:///{home_dir / 'y.db'}"


def test_config_pal_db_unsupported_url_says_what_works(tmp_path):
    with pytest.raises(ConfigError, match="PAL_DB") as info:
        load_settings({"PAL_HOME": str(tmp_path), "PAL_DB": "mysql://db/pal"})
    assert "postgresql://" in str(info.value)


def test_config_host_and_port(tmp_path):
    settings = load_settings({"PAL_HOME": str(tmp_path), "PAL_HOST": "0.0.0.0", "PAL_PORT": "8080"})
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize("port", ["abc", "41.27", "0", "65536", "-1"])
def test_config_bad_pal_port_is_a_helpful_config_error(port, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings({"PAL_HOME": str(tmp_path), "PAL_PORT": port})
    message = str(info.value)
    assert "PAL_PORT" in message
    assert port.lstrip("-") in message or "range" in message
    assert "4127" in message or "1-65535" in message


def test_config_load_settings_overrides(tmp_path):
    settings = load_settings({"PAL_HOME": str(tmp_path)}, db_url="sqlite:///other.db", port=1)
    assert settings.db_url == "sqlite:///other.db"
    assert settings.port == 1


def test_resolve_server_url_precedence():
    env = {"LOCK_SERVER_URL": "http://lock:1", "PAL_SERVER": "http://pal:2"}
    assert resolve_server_url("http://flag:3", env) == "http://flag:3"
    assert resolve_server_url(None, env) == "http://lock:1"
    assert resolve_server_url(None, {"PAL_SERVER": "http://pal:2"}) == "http://pal:2"
    assert resolve_server_url(None, {}) == "http://127.0.0.1:4127"


def test_resolve_server_url_empty_values_fall_through():
    assert resolve_server_url("", {"LOCK_SERVER_URL": "", "PAL_SERVER": "http://pal:2"}) == (
        "http://pal:2"
    )


def test_resolve_server_url_strips_trailing_slash_and_accepts_https():
    assert resolve_server_url("https://pal.example/", {}) == "https://pal.example"


def test_resolve_server_url_reads_the_process_environment(monkeypatch):
    monkeypatch.delenv("LOCK_SERVER_URL", raising=False)
    monkeypatch.setenv("PAL_SERVER", "http://from-env:9")
    assert resolve_server_url(None) == "http://from-env:9"


@pytest.mark.parametrize("url", ["127.0.0.1:4127", "ftp://x", "localhost"])
def test_resolve_server_url_rejects_non_http(url):
    with pytest.raises(ConfigError, match="http://"):
        resolve_server_url(url, {})


def test_config_settings_server_url_follows_env(tmp_path):
    settings = load_settings({"PAL_HOME": str(tmp_path), "LOCK_SERVER_URL": "http://l:1/"})
    assert settings.server_url == "http://l:1"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_home_creates_owner_only(tmp_path):
    home = tmp_path / "a" / "pal"
    assert ensure_home(home) == home
    assert home.is_dir()
    assert mode(home) == 0o700


def test_ensure_home_tightens_a_loose_existing_dir(tmp_path):
    home = tmp_path / "pal"
    home.mkdir()
    home.chmod(0o755)
    (home / "keep.txt").write_text("x")
    ensure_home(home)
    assert mode(home) == 0o700
    assert (home / "keep.txt").read_text() == "x"


def test_ensure_home_leaves_a_private_dir_alone(tmp_path):
    home = tmp_path / "pal"
    home.mkdir(mode=0o700)
    ensure_home(home)
    assert mode(home) == 0o700
