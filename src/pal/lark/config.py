"""lark.json: the Lark bots this server connects, one bot (Lark app) per agent.

The file is ``{"bots": [{"app_id", "app_secret", "agent", "label", "open_id", "domain"}]}``
at PAL_LARK_CONFIG (default ``$PAL_HOME/lark.json``), mode 0600. A missing file means no bots.
:func:`load_config` validates the whole file; every problem is a :class:`LarkConfigError`
whose message names the file, the bot and the field, and says how to fix it. Secrets never
appear in those messages (nor in :func:`redact`'s output).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pal.config import is_loopback
from pal.errors import Invalid
from pal.lark import FEISHU_DOMAIN, LARK_DOMAIN

AppId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="the Lark app's App ID (cli_...)",
    ),
]
Secret = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]
AgentKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")]
OpenId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
Label = Annotated[str, Field(max_length=120)]


class LarkConfigError(Invalid):
    """lark.json (or a change to it) is invalid; the message says what and how to fix it."""


def check_domain(domain: str) -> str:
    """``domain`` as an origin without a trailing slash; :class:`ValueError` unless it is
    ``https://host[:port]`` (``http://`` only for 127.0.0.1, localhost or ::1)."""
    parts = urlsplit(domain.strip())
    fix = (
        f"use an origin such as {FEISHU_DOMAIN} or {LARK_DOMAIN} "
        "(scheme and host only; http:// only for 127.0.0.1, localhost or ::1)"
    )
    try:
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"is not an http(s) origin: {fix}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not hold credentials: {fix}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must not have a path, query or fragment: {fix}")
    if parts.scheme == "http" and not is_loopback(host):
        raise ValueError(f"uses http:// for a host that is not loopback: {fix}")
    return f"{parts.scheme}://{parts.netloc}"


class BotConfig(BaseModel):
    """One bot: a Lark app's credentials and the agent it speaks for."""

    model_config = ConfigDict(extra="forbid")

    app_id: AppId
    app_secret: Secret
    agent: AgentKey | None = None
    label: Label = ""
    open_id: OpenId | None = None
    domain: str = FEISHU_DOMAIN

    @field_validator("domain")
    @classmethod
    def _origin(cls, value: str) -> str:
        return check_domain(value)

    def connection_key(self) -> tuple[str, str, str]:
        """What the long connection depends on: a bot whose key changes must reconnect."""
        return (self.app_id, self.app_secret, self.domain)


class LarkConfig(BaseModel):
    """The whole file. Rules: app_ids are unique, and an agent is bound to at most one bot."""

    model_config = ConfigDict(extra="forbid")

    bots: list[BotConfig] = Field(default_factory=list)

    def bot(self, app_id: str) -> BotConfig | None:
        return next((b for b in self.bots if b.app_id == app_id), None)

    def bot_of_agent(self, agent: str) -> BotConfig | None:
        return next((b for b in self.bots if b.agent == agent), None)


def _where(config: Any, loc: tuple[Any, ...]) -> str:
    """``bots[1] (app_id cli_x): app_secret`` for a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "bots" and isinstance(loc[1], int):
        index = loc[1]
        name = f"bots[{index}]"
        bots = config.get("bots") if isinstance(config, dict) else None
        if isinstance(bots, list) and index < len(bots) and isinstance(bots[index], dict):
            app_id = bots[index].get("app_id")
            if isinstance(app_id, str) and app_id and loc[2:] != ("app_id",):
                name += f" (app_id {app_id})"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{name}: {rest}" if rest else name
    return ".".join(str(p) for p in loc) or "the file"


def _describe(error: dict[str, Any]) -> str:
    # Never the input value: it may be a secret.
    kind = error.get("type")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (check its spelling)"
    message = str(error.get("msg", "is invalid"))
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be a JSON object"
    elif kind == "string_pattern_mismatch":
        message = "has characters that are not allowed (letters, digits, '_', '-', '.')"
    return message[:1].lower() + message[1:]


def _check_rules(config: LarkConfig) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    bound: dict[str, str] = {}
    for index, bot in enumerate(config.bots):
        if bot.app_id in seen:
            problems.append(
                f"bots[{index}]: app_id {bot.app_id} is also bots[{seen[bot.app_id]}]; "
                "keep one entry per Lark app"
            )
        seen.setdefault(bot.app_id, index)
        if bot.agent is not None:
            if bot.agent in bound and bound[bot.agent] != bot.app_id:
                problems.append(
                    f"bots[{index}] (app_id {bot.app_id}): agent {bot.agent} is already bound "
                    f"to bot {bound[bot.agent]}; an agent may be bound to one bot only "
                    "(set one of them to null)"
                )
            bound.setdefault(bot.agent, bot.app_id)
    return problems


def validate_config(data: Any, source: str = "lark.json") -> LarkConfig:
    """The configuration in ``data`` (parsed JSON); :class:`LarkConfigError` listing every
    problem, each prefixed with ``source``."""
    if not isinstance(data, dict):
        raise LarkConfigError(
            f'{source}: must be a JSON object such as {{"bots": [...]}}, not {type(data).__name__}'
        )
    try:
        config = LarkConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(data, tuple(e['loc']))}: {_describe(dict(e))}" for e in exc.errors()]
        raise LarkConfigError(f"{source} is invalid: " + "; ".join(problems)) from None
    problems = _check_rules(config)
    if problems:
        raise LarkConfigError(f"{source} is invalid: " + "; ".join(problems))
    return config


def load_config(path: Path) -> LarkConfig:
    """Read and validate lark.json; a missing file is a configuration without bots."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LarkConfig()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LarkConfigError(f"{path} cannot be read ({reason}); fix the file") from None
    if not text.strip():
        raise LarkConfigError(f'{path} is empty; write {{"bots": []}} or delete the file')
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the message never quotes the file's text.
        raise LarkConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    return validate_config(data, str(path))


def save_config(path: Path, config: LarkConfig) -> None:
    """Validate ``config`` whole, then replace ``path`` atomically: a temporary file in the
    same folder (mode 0600), fsync, rename. The folder is created (0700) if missing."""
    checked = validate_config(config.model_dump(), str(path))
    text = json.dumps(checked.model_dump(), indent=2, ensure_ascii=False) + "\n"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lark-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def redact_secret(secret: str) -> str:
    """``abc…(redacted)``: enough to tell two secrets apart, never the secret."""
    return f"{secret[:3]}…(redacted)" if len(secret) > 8 else "…(redacted)"


def redact_bot(bot: BotConfig) -> dict[str, Any]:
    return {**bot.model_dump(), "app_secret": redact_secret(bot.app_secret)}


def redact(config: LarkConfig) -> dict[str, Any]:
    """The configuration as a dict with every secret redacted."""
    return {"bots": [redact_bot(bot) for bot in config.bots]}


def bind_bot(config: LarkConfig, bot: BotConfig, *, rebind: bool = False) -> LarkConfig:
    """``config`` with ``bot`` added (or its entry replaced) and bound to ``bot.agent``.

    An agent already bound to another bot, or a bot bound to another agent, is a
    :class:`LarkConfigError` unless ``rebind``: then the other binding is cleared (its
    credential stays in the file). A blank ``bot.label`` keeps the entry's current label.
    """
    agent = bot.agent
    bots = [b.model_copy() for b in config.bots]
    existing = next((b for b in bots if b.app_id == bot.app_id), None)
    if agent is not None:
        other = next((b for b in bots if b.agent == agent and b.app_id != bot.app_id), None)
        if other is not None:
            if not rebind:
                raise LarkConfigError(
                    f"agent {agent} is already bound to Lark bot {other.app_id}; add "
                    f"--rebind-lark to move it to {bot.app_id}, or --unbind-lark first"
                )
            other.agent = None
        if existing is not None and existing.agent not in (None, agent) and not rebind:
            raise LarkConfigError(
                f"Lark bot {bot.app_id} is bound to agent {existing.agent}; add "
                f"--rebind-lark to bind it to {agent} instead"
            )
    if existing is not None:
        label = bot.label or existing.label
        bots[bots.index(existing)] = bot.model_copy(update={"label": label})
    else:
        bots.append(bot)
    return validate_config({"bots": [b.model_dump() for b in bots]})


def unbind_agent(config: LarkConfig, agent: str) -> tuple[LarkConfig, BotConfig]:
    """``config`` with ``agent``'s bot left unbound (the credential stays), and that bot."""
    bot = config.bot_of_agent(agent)
    if bot is None:
        raise LarkConfigError(f"agent {agent} is not bound to a Lark bot; nothing to unbind")
    bots = [b.model_copy(update={"agent": None}) if b is bot else b for b in config.bots]
    return LarkConfig(bots=bots), bot
