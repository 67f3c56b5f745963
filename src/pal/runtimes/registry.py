"""The runtimes pal knows, by the name an agent's ``runtime`` field uses."""

from __future__ import annotations

from pal.runtimes.base import RUNTIMES, Adapter, LaunchError, Probe
from pal.runtimes.claude import ClaudeAdapter
from pal.runtimes.codex import CodexAdapter
from pal.runtimes.command import CommandAdapter, KnownCommandAdapter

__all__ = ["RUNTIMES", "get_adapter", "probe_all"]


def get_adapter(name: str) -> Adapter:
    """The adapter of the runtime ``name``; an unknown name is a :class:`LaunchError`."""
    if name == "codex":
        return CodexAdapter()
    if name == "claude":
        return ClaudeAdapter()
    if name == "command":
        return CommandAdapter()
    if name in ("neeko", "coco"):
        return KnownCommandAdapter(name)
    raise LaunchError(
        f"unknown runtime {name!r}: pal runs {', '.join(RUNTIMES)}; "
        "change the agent's runtime to one of them"
    )


def probe_all() -> list[Probe]:
    """Every runtime probed with its default binary (blocking: up to 10 s per runtime)."""
    return [get_adapter(name).probe() for name in RUNTIMES]
