"""Fake runtimes for tests: real programs that behave like the real CLIs.

:func:`install_fakes` puts ``codex`` and ``claude`` shims in a folder; put that folder first
on the daemon's PATH (and ``.venv/bin`` on it for ``pal``, which the fakes call to reply).
The fakes themselves are tests/fakes/codex.py and tests/fakes/claude.py; the scripted model
server for the real codex is tests/fakes/model_server.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent
NAMES = ("codex", "claude")


def install_fakes(bin_dir: Path, *, python: str = sys.executable) -> Path:
    """Write executable ``codex`` and ``claude`` shims into ``bin_dir`` (created if needed),
    each running its fake with ``python``; returns ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        script = FAKES / f"{name}.py"
        if os.name == "nt":
            (bin_dir / f"{name}.cmd").write_text(f'@"{python}" "{script}" %*\r\n')
            continue
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} {shlex.quote(str(script))} "$@"\n')
        shim.chmod(0o755)
    return bin_dir
