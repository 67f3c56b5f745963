"""Logging for the long-running commands (``pal server``, ``pal daemon``): one line per
event on stderr, in one format, at PAL_LOG_LEVEL."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable


def configure(level: str, *, quiet: Iterable[str] = ()) -> None:
    """Log at ``level`` (``info``, ...); the ``quiet`` loggers only from warnings up."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
