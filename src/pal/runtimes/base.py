"""What every runtime adapter is, and the helpers they share.

An adapter is data and parsing only (docs/runs.md): it finds and probes the runtime's binary,
turns a :class:`LaunchRequest` into the exact argv, cwd and environment of the child
(:class:`Launch`), and reads the child's stdout lines back into a session id, usage, final
text and error (:class:`EventParser`). It never starts the agent itself: the daemon's
supervisor does, so real and fake runtimes go through the same spawn and kill code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

RUNTIMES = ("codex", "claude", "command", "neeko", "coco")
PROBE_TIMEOUT = 10.0
"""Seconds ``<binary> --version`` may take before the runtime counts as broken."""
STDERR_TAIL_LINES = 200
STDERR_LINE_CHARS = 2000
# Limits of the server's `runtimes` field (RuntimeInfo): longer texts are cut.
_VERSION_CHARS = 200
_ERROR_CHARS = 2000


class LaunchError(Exception):
    """The agent's config cannot be run; :attr:`message` says why and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Probe:
    """What a runtime's binary can do on this computer."""

    name: str
    available: bool
    version: str | None = None
    path: str | None = None
    error: str | None = None

    def report(self) -> dict[str, Any]:
        """The probe as the server's ``runtimes`` field wants it (unset fields left out)."""
        found: dict[str, Any] = {"name": self.name, "available": self.available}
        if self.version is not None:
            found["version"] = self.version[:_VERSION_CHARS]
        if self.path is not None:
            found["path"] = self.path
        if self.error is not None:
            found["error"] = self.error[:_ERROR_CHARS]
        return found


@dataclass(frozen=True)
class LaunchRequest:
    """What the daemon knows about the run it is about to start."""

    prompt: str
    cwd: str
    env: dict[str, str]  # the run's full environment, built by the daemon
    config: Mapping[str, Any]  # the agent's `config` object (may be empty)
    resume_id: str | None  # runtime session id to resume; None = a fresh session
    run_id: int


@dataclass(frozen=True)
class Launch:
    """Exactly what the supervisor starts."""

    argv: list[str]
    cwd: str
    env: dict[str, str]  # the child's full environment
    session_id: str | None = None  # known before the start (claude --session-id)


class EventParser:
    """Reads one process's output (fed complete stdout lines, without the newline).

    This base keeps a bounded tail of stderr and understands nothing on stdout; each runtime
    subclasses it. ``feed`` never raises: a line that is not the JSON it expects is ignored.
    """

    def __init__(self, resume_id: str | None = None) -> None:
        self.resume_id = resume_id
        self.session_id: str | None = None  # the last one the runtime reported
        self.usage: dict[str, Any] | None = None
        self.final_text: str | None = None
        self.error: str | None = None  # the runtime's own error event
        self.terminal = False  # a terminal event was seen
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def feed(self, line: str) -> None:
        """One stdout line. The base ignores it."""

    def feed_stderr(self, line: str) -> None:
        """One stderr line, kept (cut to a bounded length) for diagnostics."""
        self.stderr_tail.append(line[:STDERR_LINE_CHARS])

    def resume_missed(self, exit_code: int | None) -> bool:
        """True when this process resumed a session and failed because it is gone."""
        return False


class Adapter(Protocol):
    """One runtime: probe its binary, build its launch, parse its output."""

    name: str

    def probe(self, config: Mapping[str, Any] | None = None) -> Probe: ...

    def launch(self, probe: Probe, request: LaunchRequest) -> Launch: ...

    def parser(self, request: LaunchRequest) -> EventParser: ...


# -- helpers shared by the adapters -----------------------------------------------------------


def configured_binary(config: Mapping[str, Any] | None) -> str | None:
    """``config.binary`` when it is a non-empty string, else None."""
    value = (config or {}).get("binary")
    return value if isinstance(value, str) and value.strip() else None


def locate(command: str, *, path: str | None = None, cwd: str | None = None) -> str | None:
    """The absolute path of an executable: ``command`` itself when it names a file (``~``
    expanded, relative to ``cwd``), else looked up on ``path`` (default: this process's
    PATH). None when there is no such executable."""
    expanded = os.path.expanduser(command)
    if os.sep in expanded or (os.altsep and os.altsep in expanded):
        candidate = Path(cwd or os.getcwd(), expanded)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.absolute())
        return None
    found = shutil.which(expanded, path=path)
    return str(Path(found).absolute()) if found else None


def probe_binary(
    runtime: str,
    config: Mapping[str, Any] | None,
    *,
    install: str,
    repair: Mapping[str, str] | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Probe:
    """Locate the runtime's binary (``config.binary``, else the runtime's name on PATH) and
    run ``<binary> --version``. Never raises.

    ``install`` says how to install it ("install it with `npm install -g ...`"); ``repair``
    maps a text a broken install prints (e.g. "Missing optional dependency") to the vendor's
    fix.
    """
    given = configured_binary(config)
    path = locate(given or runtime)
    if path is None:
        if given and os.path.isfile(os.path.expanduser(given)):
            error = (
                f"{runtime} binary {given!r} (the agent's config.binary) is not executable: "
                f"make it executable (chmod +x), or {install}"
            )
        elif given:
            error = (
                f"{runtime} binary {given!r} (the agent's config.binary) was not found: "
                f"fix config.binary, or {install}"
            )
        else:
            error = (
                f"{runtime} is not installed on this computer: {install} "
                "(or set the agent's config.binary to its path)"
            )
        return Probe(runtime, False, error=error)
    code, output = run_version(path, timeout)
    if code == 0:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return Probe(runtime, True, version=lines[0] if lines else None, path=path)
    return Probe(runtime, False, path=path, error=_broken(runtime, path, code, output, repair))


def run_version(path: str, timeout: float = PROBE_TIMEOUT) -> tuple[int | None, str]:
    """Run ``<path> --version`` (stdin /dev/null, own process group so a timeout kills what
    it started too). Returns (exit code, stdout then stderr); the code is None on timeout and
    the text says what went wrong when it could not run at all."""
    try:
        child = subprocess.Popen(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=sys.platform != "win32",
        )
    except OSError as exc:  # not executable, bad interpreter line, ...
        return -1, f"cannot run it: {exc.strerror or exc}"
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(child)
        return None, f"`{path} --version` did not answer within {timeout:g} s"
    text = out.decode(errors="replace") + err.decode(errors="replace")
    return child.returncode, text


def _kill_tree(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            child.kill()
        else:
            os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        child.communicate(timeout=2)


def _broken(
    runtime: str, path: str, code: int | None, output: str, repair: Mapping[str, str] | None
) -> str:
    if code is None:  # timed out: the output is the explanation
        return f"{runtime} at {path} is not working: {output}"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = "; ".join(lines[:3])[:500] or "no output"
    for marker, fix in (repair or {}).items():
        if marker.lower() in output.lower():
            return f"{runtime} at {path} is installed but broken ({said}): {fix}"
    if code == -1:
        return f"{runtime} at {path} {said}"
    return f"{runtime} at {path} is not working: `--version` exited with code {code} ({said})"


def json_object(line: str) -> dict[str, Any] | None:
    """``line`` parsed as a JSON object, or None when it is not one (never raises)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def string_list(config: Mapping[str, Any], key: str) -> list[str]:
    """``config[key]`` as a list of strings (missing: empty); anything else is a
    :class:`LaunchError`."""
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LaunchError(
            f"the agent's config.{key} must be a list of strings (got {value!r}): "
            f'set it with PATCH /api/agents/<key> and {{"config": {{"{key}": [...]}}}}'
        )
    return list(value)


def optional_string(config: Mapping[str, Any], key: str) -> str | None:
    """``config[key]`` when set: a non-empty string, else a :class:`LaunchError`."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LaunchError(f"the agent's config.{key} must be a non-empty string (got {value!r})")
    return value


def require_available(probe: Probe) -> str:
    """The probed binary's path, or a :class:`LaunchError` with the probe's error."""
    if not probe.available or probe.path is None:
        raise LaunchError(probe.error or f"{probe.name} is not available on this computer")
    return probe.path
