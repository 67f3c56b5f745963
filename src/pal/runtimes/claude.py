"""Claude Code: ``claude -p --output-format stream-json --verbose`` (CLI 2.1.x).

New session: ``claude -p PROMPT --output-format stream-json --verbose --session-id <uuid4>
--permission-mode M --allowedTools "Bash(pal:*)" [--model M] [args]``, so the session id is
known before the first byte; resume: ``--resume <id>`` instead of ``--session-id``. stdout
is one JSON object per line: ``system``/``init``, ``assistant``, ``user``, then ``result``
(the authoritative session id, final text, usage and cost, ``is_error``). A resume of a
session claude does not have (sessions are per cwd) prints "No conversation found with
session ID: <id>" and exits 1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pal.runtimes.base import (
    PROBE_TIMEOUT,
    EventParser,
    Launch,
    LaunchError,
    LaunchRequest,
    Probe,
    json_object,
    optional_string,
    probe_binary,
    require_available,
    string_list,
)

RESUME_MISS_TEXT = "No conversation found with session ID"
INSTALL = "install it with `npm install -g @anthropic-ai/claude-code`"
REPAIR = {
    "native binary not installed": (
        "reinstall it with `npm install -g @anthropic-ai/claude-code` "
        "(without --omit=optional or --ignore-scripts: the native binary comes with them)"
    ),
}
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
ALLOWED_TOOLS = "Bash(pal:*)"  # the agent must be able to run `pal cli` to answer


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class ClaudeAdapter:
    """``claude -p`` with stream-json output (see the module docstring)."""

    name = "claude"

    def __init__(
        self,
        *,
        probe_timeout: float = PROBE_TIMEOUT,
        is_root: Callable[[], bool] = _is_root,
        new_session_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.probe_timeout = probe_timeout
        self._is_root = is_root
        self._new_session_id = new_session_id

    def probe(self, config: Mapping[str, Any] | None = None) -> Probe:
        return probe_binary(
            "claude", config, install=INSTALL, repair=REPAIR, timeout=self.probe_timeout
        )

    def launch(self, probe: Probe, request: LaunchRequest) -> Launch:
        binary = require_available(probe)
        config = request.config
        mode = config.get("permission_mode", "acceptEdits")
        if not isinstance(mode, str) or mode not in PERMISSION_MODES:
            raise LaunchError(
                f"the agent's config.permission_mode {mode!r} is not a claude permission "
                f"mode: use one of {', '.join(PERMISSION_MODES)} (default acceptEdits)"
            )
        model = optional_string(config, "model")
        extra = string_list(config, "args")
        if request.resume_id is not None:
            session_id = request.resume_id
            session = ["--resume", session_id]
        else:
            session_id = self._new_session_id()
            session = ["--session-id", session_id]
        flags = [
            "--output-format",
            "stream-json",
            "--verbose",  # stream-json with -p requires it
            *session,
            "--permission-mode",
            mode,
            "--allowedTools",
            ALLOWED_TOOLS,
            *(["--model", model] if model else []),
            *extra,
        ]
        if request.prompt.startswith("-"):  # it would read as a flag: last, after "--"
            argv = [binary, "-p", *flags, "--", request.prompt]
        else:
            argv = [binary, "-p", request.prompt, *flags]
        env = {k: v for k, v in request.env.items() if k not in ("CLAUDECODE", "IS_SANDBOX")}
        bypass = mode == "bypassPermissions" or "--dangerously-skip-permissions" in extra
        if bypass and self._is_root():
            env["IS_SANDBOX"] = "1"  # claude refuses to bypass permissions as root otherwise
        config_dir = optional_string(config, "claude_config_dir")
        if config_dir is not None:
            expanded = os.path.expanduser(config_dir)
            if not os.path.isabs(expanded):
                raise LaunchError(
                    f"the agent's config.claude_config_dir must be an absolute path "
                    f"(got {config_dir!r})"
                )
            env["CLAUDE_CONFIG_DIR"] = expanded
        return Launch(argv=argv, cwd=request.cwd, env=env, session_id=session_id)

    def parser(self, request: LaunchRequest) -> ClaudeParser:
        return ClaudeParser(request.resume_id)


class ClaudeParser(EventParser):
    """Reads claude's stream-json events."""

    def __init__(self, resume_id: str | None = None) -> None:
        super().__init__(resume_id)
        self.conversation_missing = False

    def feed(self, line: str) -> None:
        event = json_object(line)
        if event is None:
            if RESUME_MISS_TEXT in line:
                self.conversation_missing = True
            return
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self._session(event)
        elif kind == "assistant":
            text = _assistant_text(event.get("message"))
            if text:
                self.final_text = text
        elif kind == "result":
            self.terminal = True
            self._session(event)
            result = event.get("result")
            if isinstance(result, str) and result:
                self.final_text = result
            self.usage = _usage(event) or self.usage
            if event.get("is_error") is True:
                self.error = _error(event)
                if RESUME_MISS_TEXT in self.error:
                    self.conversation_missing = True

    def feed_stderr(self, line: str) -> None:
        super().feed_stderr(line)
        if RESUME_MISS_TEXT in line:
            self.conversation_missing = True

    def resume_missed(self, exit_code: int | None) -> bool:
        return self.resume_id is not None and self.conversation_missing

    def _session(self, event: dict[str, Any]) -> None:
        session_id = event.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.session_id = session_id


def _assistant_text(message: Any) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return None
    texts = [
        block["text"]
        for block in message["content"]
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "\n".join(texts) or None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _usage(event: dict[str, Any]) -> dict[str, Any] | None:
    raw = event.get("usage")
    usage: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key, source in (
            ("input_tokens", "input_tokens"),
            ("cached_input_tokens", "cache_read_input_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            if _number(raw.get(source)):
                usage[key] = int(raw[source])
    if _number(event.get("total_cost_usd")):
        usage["cost_usd"] = float(event["total_cost_usd"])
    if not usage:
        return None
    usage["scope"] = "run"
    return usage


def _error(event: dict[str, Any]) -> str:
    result = event.get("result")
    if isinstance(result, str) and result:
        return result
    errors = event.get("errors")
    if isinstance(errors, list):
        said = "; ".join(str(e) for e in errors if e)
        if said:
            return said
    return f"claude reported an error ({event.get('subtype') or 'no detail'})"
