"""Settings from the environment, with the seed README's names and defaults.

Every variable pal reads is listed in ``ENV_VARS``; ``docs/configuration.md`` documents each
one and a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4127
DEFAULT_SERVER_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_DAEMON_URL = "http://127.0.0.1:4137"
DEFAULT_REACTION_EMOJI = "Typing"
DEFAULT_LOCAL_PORT = 4137
# Seconds without a heartbeat after which a computer is offline (its claims go back to
# pending and its running runs become lost).
DEFAULT_HEARTBEAT_GRACE = 60.0
# Seconds a killed run gets between the graceful signal and SIGKILL of its process tree.
DEFAULT_KILL_GRACE = 10.0
# Bytes of output (stdout and stderr together) the server keeps per run: the newest.
DEFAULT_RUN_OUTPUT_LIMIT = 8 * 1024 * 1024
# Largest artifact the server stores, in bytes (refused while the upload streams in).
DEFAULT_ARTIFACT_MAX_BYTES = 50 * 1024 * 1024
# Seconds an artifact uploaded without --ttl stays served (0 = until revoked).
DEFAULT_ARTIFACT_TTL = 30 * 24 * 3600
# PAL_AUTH: "auto" asks for the admin token when the server binds a non-loopback address;
# "token" always asks for it.
AUTH_MODES = ("auto", "token")
TOKEN_FILE = "admin.token"  # under PAL_HOME

ENV_VARS: dict[str, str] = {
    "PAL_HOME": "~/.pal",
    "PAL_DB": "$PAL_HOME/lock.sqlite",
    "PAL_HOST": DEFAULT_HOST,
    "PAL_PORT": str(DEFAULT_PORT),
    "PAL_SERVER": DEFAULT_SERVER_URL,
    "LOCK_SERVER_URL": "-",
    "PAL_API_KEY": "-",
    "PAL_AGENT": "-",
    "PAL_COMPUTER_ID": "-",
    "PAL_COMPUTER_SECRET": "-",
    "LOCK_DAEMON_URL": DEFAULT_DAEMON_URL,
    "LOCK_DAEMON_TOKEN": "token file fallback",
    "PAL_RUN_AUTH": "-",
    "PAL_RUN_ID": "-",
    "PAL_LARK_CONFIG": "$PAL_HOME/lark.json",
    "PAL_LARK_ACTION_REACTION_EMOJI": DEFAULT_REACTION_EMOJI,
    "PAL_LOG_LEVEL": "info",
    "PAL_HEARTBEAT_GRACE": str(int(DEFAULT_HEARTBEAT_GRACE)),
    "PAL_KILL_GRACE": str(int(DEFAULT_KILL_GRACE)),
    "PAL_RUN_OUTPUT_LIMIT": str(DEFAULT_RUN_OUTPUT_LIMIT),
    "PAL_AUTH": "auto",
    "PAL_ADMIN_TOKEN": "token file fallback",
    "PAL_ARTIFACT_MAX_BYTES": str(DEFAULT_ARTIFACT_MAX_BYTES),
    "PAL_ARTIFACT_TTL": str(DEFAULT_ARTIFACT_TTL),
}


class ConfigError(ValueError):
    """A setting has a value pal cannot use; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one process. Build with :func:`load_settings`."""

    home: Path
    db_url: str
    host: str
    port: int
    server_url: str
    daemon_url: str
    lark_config: Path
    reaction_emoji: str
    log_level: str
    api_key: str | None = None
    agent: str | None = None
    computer_id: str | None = None
    computer_secret: str | None = None
    daemon_token: str | None = None
    run_auth: str | None = None
    heartbeat_grace: float = DEFAULT_HEARTBEAT_GRACE
    kill_grace: float = DEFAULT_KILL_GRACE
    run_output_limit: int = DEFAULT_RUN_OUTPUT_LIMIT
    auth: str = "auto"
    admin_token: str | None = None
    artifact_max_bytes: int = DEFAULT_ARTIFACT_MAX_BYTES
    artifact_ttl: int = DEFAULT_ARTIFACT_TTL

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def daemon_token_file(self) -> Path:
        """Where the daemon keeps its local API bearer token (owner-only, 0600)."""
        return self.home / "daemon.token"

    @property
    def admin_token_file(self) -> Path:
        """Where the server keeps the admin token and the console finds it (0600)."""
        return self.home / TOKEN_FILE

    @property
    def artifacts_dir(self) -> Path:
        """Where uploaded artifacts are stored, one file per artifact."""
        return self.home / "artifacts"

    @property
    def loopback_only(self) -> bool:
        """Whether the server binds only a loopback address (unreachable from other hosts)."""
        return is_loopback(self.host)

    @property
    def token_required(self) -> bool:
        """Whether the admin and control API asks for the admin token (DESIGN.md section 9)."""
        return self.auth == "token" or not self.loopback_only


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` and the rest of 127/8; not ``0.0.0.0`` or a name."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def home_dir(env: Mapping[str, str]) -> Path:
    """PAL_HOME (default ``~/.pal``), absolute."""
    raw = env.get("PAL_HOME") or "~/.pal"
    return Path(raw).expanduser().absolute()


def database_url(value: str, home: Path) -> str:
    """Turn PAL_DB (a file path or a URL) into a SQLAlchemy URL.

    A ``postgresql://`` (or ``postgres://``) URL selects PostgreSQL through psycopg 3;
    ``sqlite:///...`` is taken as is; anything else is a SQLite file path.
    """
    if not value:
        return f"sqlite:///{home / 'lock.sqlite'}"
    for prefix in ("postgresql://", "postgres://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    if value.startswith(("postgresql+", "sqlite:")):
        return value
    if "://" in value:
        raise ConfigError(
            f"PAL_DB={value!r} is not supported: use a SQLite file path "
            "or a postgresql://user@host:port/dbname URL"
        )
    return f"sqlite:///{Path(value).expanduser().absolute()}"


def _port(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"PAL_PORT={raw!r} is not a number: use a port such as 4127") from None
    if not 0 < port < 65536:
        raise ConfigError(f"PAL_PORT={port} is out of range: use 1-65535")
    return port


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(raw: str | None) -> str:
    level = (raw or "info").strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"PAL_LOG_LEVEL={raw!r} is not a log level: use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def _grace(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_HEARTBEAT_GRACE
    try:
        grace = float(raw)
    except ValueError:
        raise ConfigError(
            f"PAL_HEARTBEAT_GRACE={raw!r} is not a number: use seconds, such as 60"
        ) from None
    if not 1 <= grace <= 86_400:
        raise ConfigError(f"PAL_HEARTBEAT_GRACE={raw} is out of range: use 1-86400 seconds")
    return grace


def _kill_grace(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_KILL_GRACE
    try:
        grace = float(raw)
    except ValueError:
        raise ConfigError(
            f"PAL_KILL_GRACE={raw!r} is not a number: use seconds, such as 10"
        ) from None
    if not 0 <= grace <= 3600:
        raise ConfigError(f"PAL_KILL_GRACE={raw} is out of range: use 0-3600 seconds")
    return grace


def _output_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_RUN_OUTPUT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigError(
            f"PAL_RUN_OUTPUT_LIMIT={raw!r} is not a whole number: use bytes, such as 8388608"
        ) from None
    if not 65_536 <= limit <= 1_073_741_824:
        raise ConfigError(f"PAL_RUN_OUTPUT_LIMIT={raw} is out of range: use 65536-1073741824 bytes")
    return limit


def _auth(raw: str | None) -> str:
    mode = (raw or "auto").strip().lower()
    if mode not in AUTH_MODES:
        raise ConfigError(
            f"PAL_AUTH={raw!r} is not an auth mode: use auto (the admin token when the server "
            "is reachable from other hosts) or token (always)"
        )
    return mode


def _whole(name: str, raw: str | None, default: int, low: int, high: int, unit: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number: use {unit}, such as {default}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw} is out of range: use {low}-{high} {unit}")
    return value


def resolve_server_url(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The server URL for clients: ``--server``, then LOCK_SERVER_URL, then PAL_SERVER."""
    env = os.environ if env is None else env
    url = flag or env.get("LOCK_SERVER_URL") or env.get("PAL_SERVER") or DEFAULT_SERVER_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = home_dir(env)
    values: dict[str, object] = {
        "home": home,
        "db_url": database_url(env.get("PAL_DB", ""), home),
        "host": env.get("PAL_HOST") or DEFAULT_HOST,
        "port": _port(env.get("PAL_PORT")),
        "server_url": resolve_server_url(None, env),
        "daemon_url": (env.get("LOCK_DAEMON_URL") or DEFAULT_DAEMON_URL).rstrip("/"),
        "lark_config": Path(env.get("PAL_LARK_CONFIG") or home / "lark.json").expanduser(),
        "reaction_emoji": env.get("PAL_LARK_ACTION_REACTION_EMOJI") or DEFAULT_REACTION_EMOJI,
        "log_level": _log_level(env.get("PAL_LOG_LEVEL")),
        "api_key": env.get("PAL_API_KEY") or None,
        "agent": env.get("PAL_AGENT") or None,
        "computer_id": env.get("PAL_COMPUTER_ID") or None,
        "computer_secret": env.get("PAL_COMPUTER_SECRET") or None,
        "daemon_token": env.get("LOCK_DAEMON_TOKEN") or None,
        "run_auth": env.get("PAL_RUN_AUTH") or None,
        "heartbeat_grace": _grace(env.get("PAL_HEARTBEAT_GRACE")),
        "kill_grace": _kill_grace(env.get("PAL_KILL_GRACE")),
        "run_output_limit": _output_limit(env.get("PAL_RUN_OUTPUT_LIMIT")),
        "auth": _auth(env.get("PAL_AUTH")),
        "admin_token": (env.get("PAL_ADMIN_TOKEN") or "").strip() or None,
        "artifact_max_bytes": _whole(
            "PAL_ARTIFACT_MAX_BYTES",
            env.get("PAL_ARTIFACT_MAX_BYTES"),
            DEFAULT_ARTIFACT_MAX_BYTES,
            1024,
            10 * 1024**3,
            "bytes",
        ),
        "artifact_ttl": _whole(
            "PAL_ARTIFACT_TTL",
            env.get("PAL_ARTIFACT_TTL"),
            DEFAULT_ARTIFACT_TTL,
            0,
            10 * 365 * 86_400,
            "seconds",
        ),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def ensure_home(home: Path) -> Path:
    """Create PAL_HOME owner-only (0700); tighten it if it already exists looser."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if home.stat().st_mode & 0o077:
        home.chmod(0o700)
    return home
