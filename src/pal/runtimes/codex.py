"""OpenAI Codex CLI: ``codex exec --json`` (validated against codex-cli 0.171.0).

New thread: ``codex exec --json --skip-git-repo-check <sandbox> [-m M] [args] PROMPT``;
resume: the same exec flags, then ``resume <thread_id> PROMPT`` (codex rejects exec-level
flags such as ``--sandbox`` after ``resume``). stdout is JSONL: ``thread.started`` (the
thread id, also on a resume), ``item.*``, ``turn.completed`` (usage, summed over the whole
thread) or ``turn.failed``. A resume of a thread this CODEX_HOME does not have exits 1 with
no JSONL and :data:`RESUME_MISS_PATTERN` on stderr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
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

RESUME_MISS_PATTERN = re.compile(r"no rollout found for thread id", re.IGNORECASE)
"""What codex prints on stderr when the thread to resume is gone. codex 0.171.0 prints
``Error: thread/resume: thread/resume failed: no rollout found for thread id <id> (code
-32600)`` and exits 1 (tests/e2e/test_codex_contract.py checks it against the real binary;
tests/fakes/codex.py ``RESUME_MISS_MESSAGE`` must match it)."""

INSTALL = "install it with `npm install -g @openai/codex`"
REPAIR = {
    "Missing optional dependency": (
        "reinstall it with `npm install -g @openai/codex@latest` "
        "(without --omit=optional: the native binary is an optional dependency)"
    ),
}
SANDBOX_FLAGS: dict[str, list[str]] = {
    # network_access: `pal cli` must reach the daemon's loopback API from inside the sandbox
    "workspace-write": [
        "--sandbox",
        "workspace-write",
        "-c",
        "sandbox_workspace_write.network_access=true",
    ],
    "danger-full-access": ["--sandbox", "danger-full-access"],
    "bypass": ["--dangerously-bypass-approvals-and-sandbox"],
    "read-only": ["--sandbox", "read-only"],  # pal cli cannot reach the daemon then
}
USAGE_KEYS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
)


class CodexAdapter:
    """``codex exec --json`` (see the module docstring)."""

    name = "codex"

    def __init__(self, *, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.probe_timeout = probe_timeout

    def probe(self, config: Mapping[str, Any] | None = None) -> Probe:
        return probe_binary(
            "codex", config, install=INSTALL, repair=REPAIR, timeout=self.probe_timeout
        )

    def launch(self, probe: Probe, request: LaunchRequest) -> Launch:
        binary = require_available(probe)
        config = request.config
        sandbox = config.get("sandbox", "workspace-write")
        if not isinstance(sandbox, str) or sandbox not in SANDBOX_FLAGS:
            raise LaunchError(
                f"the agent's config.sandbox {sandbox!r} is not a codex sandbox: use one of "
                f"{', '.join(SANDBOX_FLAGS)} (default workspace-write)"
            )
        model = optional_string(config, "model")
        flags = [
            "exec",
            "--json",
            "--skip-git-repo-check",
            *SANDBOX_FLAGS[sandbox],
            *(["-m", model] if model else []),
            *string_list(config, "args"),
        ]
        env = dict(request.env)
        home = optional_string(config, "codex_home")
        if home is not None:
            env["CODEX_HOME"] = os.path.expanduser(home)
        _check_home(env.get("CODEX_HOME"), configured=home is not None)
        # A prompt that starts with "-" would read as a flag ("-" alone: read stdin).
        prompt = ["--", request.prompt] if request.prompt.startswith("-") else [request.prompt]
        if request.resume_id is not None:
            argv = [binary, *flags, "resume", request.resume_id, *prompt]
        else:
            argv = [binary, *flags, *prompt]
        return Launch(argv=argv, cwd=request.cwd, env=env)

    def parser(self, request: LaunchRequest) -> CodexParser:
        return CodexParser(request.resume_id)


def _check_home(home: str | None, *, configured: bool) -> None:
    """codex refuses to start when CODEX_HOME names a folder that does not exist."""
    if not home:
        return  # ~/.codex: codex creates it
    where = "the agent's config.codex_home" if configured else "CODEX_HOME"
    if not os.path.isabs(home):
        raise LaunchError(f"{where} must be an absolute path (got {home!r})")
    if not Path(home).is_dir():
        raise LaunchError(
            f"{where} is {home}, which does not exist: create it and log in there "
            f"(`CODEX_HOME={home} codex login`), or point it at an existing codex home"
        )


class CodexParser(EventParser):
    """Reads ``codex exec --json`` events."""

    def __init__(self, resume_id: str | None = None) -> None:
        super().__init__(resume_id)
        self.thread_started = False
        self._failure: str | None = None  # turn.failed: the turn's own end
        self._warning: str | None = None  # the last `error` event (often a retry notice)

    def feed(self, line: str) -> None:
        event = json_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "thread.started":
            thread_id = event.get("thread_id")
            if isinstance(thread_id, str) and thread_id:
                self.session_id = thread_id
                self.thread_started = True
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                text = item.get("text")
                if isinstance(text, str):
                    self.final_text = text
        elif kind == "turn.completed":
            self.terminal = True
            self._warning = None  # the turn recovered from whatever it reported
            usage = _usage(event.get("usage"))
            if usage is not None:
                self.usage = usage
        elif kind == "turn.failed":
            self.terminal = True
            self._failure = _message(event.get("error")) or "codex reported turn.failed"
        elif kind == "error":
            self._warning = _message(event) or self._warning
        self.error = self._failure or self._warning

    def resume_missed(self, exit_code: int | None) -> bool:
        if self.resume_id is None or exit_code in (None, 0) or self.thread_started:
            return False
        return any(RESUME_MISS_PATTERN.search(line) for line in self.stderr_tail)


def _message(value: Any) -> str | None:
    if isinstance(value, dict):
        message = value.get("message")
        if isinstance(message, str) and message:
            return message
    return None


def _usage(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    usage: dict[str, Any] = {
        key: value[key]
        for key in USAGE_KEYS
        if isinstance(value.get(key), int) and not isinstance(value.get(key), bool)
    }
    if not usage:
        return None
    usage["scope"] = "thread"  # codex sums usage over the thread, resumes included
    return usage
