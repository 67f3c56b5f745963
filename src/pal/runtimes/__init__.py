"""Runtime adapters: how pal starts each coding-agent CLI and reads what it prints.

See :mod:`pal.runtimes.base` for the interface and docs/runs.md for the runtimes.
"""

from pal.runtimes.base import (
    RUNTIMES,
    Adapter,
    EventParser,
    Launch,
    LaunchError,
    LaunchRequest,
    Probe,
)
from pal.runtimes.registry import get_adapter, probe_all

__all__ = [
    "RUNTIMES",
    "Adapter",
    "EventParser",
    "Launch",
    "LaunchError",
    "LaunchRequest",
    "Probe",
    "get_adapter",
    "probe_all",
]
