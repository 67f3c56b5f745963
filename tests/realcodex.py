"""The real codex CLI for the contract tests: installed once from the npm registry, pinned.

``ensure_codex()`` installs ``@openai/codex@CODEX_VERSION`` with npm into the repository's
ignored ``.cache/codex`` folder the first time it is needed, under a file lock so parallel
pytest workers install it once, and returns the codex executable. It prefers the native binary
that the platform package ships (``node_modules/@openai/codex-<platform>/vendor/<triple>/bin/
codex``): it is what the npm launcher ``node_modules/.bin/codex`` runs anyway, and on Node.js
older than 22.15 the launcher stays in between as a node parent process, which gets in the way
of signals and process-tree checks. The launcher is the fallback when the native binary does not
run.

npm missing is an error, not a skip: the contract test is what "codex is validated" means.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

CODEX_VERSION = "0.171.0"
PACKAGE = f"@openai/codex@{CODEX_VERSION}"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "codex"
INSTALL_TIMEOUT = 600.0


class CodexInstallError(RuntimeError):
    """The pinned codex CLI could not be installed or does not run."""


def _version_of(binary: Path) -> str | None:
    """What ``binary --version`` prints (stripped), or None when it does not run cleanly."""
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _installed_version(prefix: Path) -> str | None:
    try:
        data = json.loads(
            (prefix / "node_modules" / "@openai" / "codex" / "package.json").read_text()
        )
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def _candidates(prefix: Path) -> list[Path]:
    """Native binaries first (any platform package), then the npm launcher."""
    modules = prefix / "node_modules"
    native = sorted(modules.glob("@openai/codex-*/vendor/*/bin/codex"))
    return [*native, modules / ".bin" / "codex"]


def find_codex(prefix: Path = CACHE_DIR) -> Path | None:
    """The installed codex executable that runs and reports the pinned version, or None."""
    if _installed_version(prefix) != CODEX_VERSION:
        return None
    expected = f"codex-cli {CODEX_VERSION}"
    for candidate in _candidates(prefix):
        if candidate.exists() and _version_of(candidate) == expected:
            return candidate
    return None


def _npm_install(prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise CodexInstallError(
            "npm is not installed, so the real codex CLI for the contract tests cannot be "
            "installed: install Node.js and npm (Debian: `apt-get install -y nodejs npm`), "
            f"then run the tests again (they install {PACKAGE} into {prefix})"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save"]
    try:
        done = subprocess.run(
            [*argv, PACKAGE],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CodexInstallError(
            f"`npm install {PACKAGE}` did not finish within {INSTALL_TIMEOUT:.0f}s "
            f"(is the npm registry reachable?)"
        ) from exc
    if done.returncode != 0:
        raise CodexInstallError(
            f"`npm install {PACKAGE}` into {prefix} failed with exit code "
            f"{done.returncode}:\n{done.stderr.strip()[-4000:]}"
        )


def ensure_codex(prefix: Path = CACHE_DIR) -> Path:
    """Return the pinned codex executable, installing it into ``prefix`` first if needed."""
    found = find_codex(prefix)
    if found is not None:
        return found
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lock_path = prefix.parent / f"{prefix.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing: wait for it
        try:
            found = find_codex(prefix)
            if found is None:
                _npm_install(prefix)
                found = find_codex(prefix)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if found is None:
        tried = ", ".join(str(p) for p in _candidates(prefix))
        raise CodexInstallError(
            f"installed {PACKAGE} into {prefix}, but no codex executable there prints "
            f"`codex-cli {CODEX_VERSION}` for --version (tried {tried}); delete {prefix} "
            "and run the tests again"
        )
    return found


if __name__ == "__main__":
    print(ensure_codex())
