"""Any program as a runtime: ``command``, and ``neeko`` and ``coco`` which run the same way.

The agent's ``config.command`` is an argv template (a list of strings) whose items may hold
the placeholders ``{prompt}``, ``{cwd}``, ``{run_id}`` and ``{session_id}`` (the session to
resume, or ""). Success is the exit code alone; a stdout line that is a JSON object with a
string ``session_id`` sets the session id, so a script can resume its own sessions.

``neeko`` and ``coco`` are known names: the daemon probes their binary (``--version``) so a
computer reports whether it has them, but pal has no validated adapter for their flags, so
they need ``config.command`` like ``command`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pal.runtimes.base import (
    PROBE_TIMEOUT,
    EventParser,
    Launch,
    LaunchError,
    LaunchRequest,
    Probe,
    json_object,
    locate,
    probe_binary,
)

EXAMPLE = '{"config": {"command": ["my-agent", "--cwd", "{cwd}", "{prompt}"]}}'
_PLACEHOLDER = re.compile(r"\{(?:prompt|cwd|run_id|session_id)\}")
HOW = (
    f"set it with PATCH /api/agents/<key> and a body like {EXAMPLE} "
    "(placeholders: {prompt}, {cwd}, {run_id}, {session_id})"
)


class CommandAdapter:
    """``config.command`` with its placeholders filled in."""

    name = "command"

    def probe(self, config: Mapping[str, Any] | None = None) -> Probe:
        return Probe(self.name, True)  # what runs is per agent: checked at launch

    def launch(self, probe: Probe, request: LaunchRequest) -> Launch:
        return command_launch(self.name, request)

    def parser(self, request: LaunchRequest) -> CommandParser:
        return CommandParser(request.resume_id)


class KnownCommandAdapter:
    """A runtime pal knows by name (``neeko``, ``coco``) but drives like ``command``."""

    def __init__(self, name: str, *, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.name = name
        self.probe_timeout = probe_timeout

    def probe(self, config: Mapping[str, Any] | None = None) -> Probe:
        install = f"put the `{self.name}` binary on PATH"
        return probe_binary(self.name, config, install=install, timeout=self.probe_timeout)

    def launch(self, probe: Probe, request: LaunchRequest) -> Launch:
        if request.config.get("command") is None:
            raise LaunchError(
                f"pal has no built-in adapter for {self.name} (its flags are not validated), "
                f"so its agents need config.command, the argv to run: {HOW}"
            )
        return command_launch(self.name, request)

    def parser(self, request: LaunchRequest) -> CommandParser:
        return CommandParser(request.resume_id)


def command_launch(runtime: str, request: LaunchRequest) -> Launch:
    """``request.config["command"]`` with the placeholders filled in, its first word
    resolved on the run's PATH (or as a path, relative to the run's cwd)."""
    template = request.config.get("command")
    if template is None:
        raise LaunchError(f"a {runtime} agent needs config.command, the argv to run: {HOW}")
    if (
        not isinstance(template, list)
        or not template
        or not all(isinstance(item, str) for item in template)
        or not template[0].strip()
    ):
        raise LaunchError(
            f"the agent's config.command must be a non-empty list of strings, the first one "
            f"the program (got {template!r}): {HOW}"
        )
    values = {
        "{prompt}": request.prompt,
        "{cwd}": request.cwd,
        "{run_id}": str(request.run_id),
        "{session_id}": request.resume_id or "",
    }
    argv = [_fill(item, values) for item in template]
    program = locate(argv[0], path=request.env.get("PATH"), cwd=request.cwd)
    if program is None:
        raise LaunchError(
            f"the agent's command {argv[0]!r} (config.command[0]) was not found on the run's "
            "PATH or as a path: install it, or fix config.command"
        )
    return Launch(argv=[program, *argv[1:]], cwd=request.cwd, env=dict(request.env))


def _fill(item: str, values: Mapping[str, str]) -> str:
    """Replace the placeholders in one pass, so a value holding "{cwd}" stays as it is."""
    return _PLACEHOLDER.sub(lambda found: values[found.group(0)], item)


class CommandParser(EventParser):
    """Only a ``{"session_id": "..."}`` JSON line means something; the exit code is the
    result."""

    def feed(self, line: str) -> None:
        event = json_object(line)
        if event is None:
            return
        session_id = event.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.session_id = session_id
