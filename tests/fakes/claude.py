"""A fake ``claude`` CLI: ``claude -p PROMPT --output-format stream-json --verbose`` as Claude
Code 2.1.332 behaves, as far as the daemon can see (../shared/reference/runtimes.md §2).

Run it through the shim that :func:`tests.fakes.install_fakes` writes. What it mirrors:

- **argv** (commander-like): an unknown option is ``error: unknown option '--x'``, exit 1;
  ``--allowedTools`` takes every following word up to the next option; stream-json in print
  mode needs ``--verbose``; ``--session-id`` (a new UUID, not already used) and
  ``--resume``/``--continue`` are mutually exclusive. ``--version`` prints ``2.1.332 (Claude
  Code)``.
- **root**: ``bypassPermissions`` (or ``--dangerously-skip-permissions``) as root needs
  ``IS_SANDBOX=1``, else exit 1.
- **stdin**: read to EOF when it is not a TTY, before any work.
- **events**: ``system``/``init``, an ``assistant`` ``tool_use`` of Bash running ``pal cli
  send "<text>"`` (``pal`` from PATH), the ``user`` ``tool_result``, the closing
  ``assistant`` text, and ``result`` (session id, result text, usage, ``total_cost_usd``).
  Bash runs only when allowed (``--allowedTools "Bash(pal:*)"`` or ``Bash``, or
  ``bypassPermissions``); otherwise the tool result is a permission error, the result lists
  it in ``permission_denials``, and the run still ends ``success``, exit 0, as claude does.
- **sessions**: ``$CLAUDE_CONFIG_DIR`` (default ``~/.claude``) ``/projects/<cwd, every
  character other than a letter or digit replaced by ->/<id>.jsonl``. A resume of an id
  this cwd does not have prints a ``result`` of subtype ``error_during_execution`` whose
  ``errors`` say "No conversation found with session ID: <id>", the same on stderr, exit 1.

Scenario directives: those of tests/fakes/codex.py (``sleep``, ``exit``, ``ignore_sigterm``,
``grandchild``, ``flood``, ``stderr_flood``, ``long_line``, ``non_utf8``, ``no_reply``,
``reply``; default reply ``fake claude: done (run <PAL_RUN_ID>)``) plus ``[fake:is_error]``
(an API error reported in the result with ``is_error: true`` while the exit code is 0).
Records go to ``$FAKE_RECORD_DIR`` like the fake codex's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

if __package__:  # imported as tests.fakes.claude
    from tests.fakes import codex as common
else:  # run as a script: tests/fakes is sys.path[0]
    import codex as common  # type: ignore[no-redef]

VERSION = "2.1.332 (Claude Code)"
MODEL = "claude-sonnet-4-5-20250929"
RESUME_MISS = "No conversation found with session ID: {session_id}"
ROOT_REFUSAL = (
    "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
)
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 100,
    "output_tokens": 8,
}
COST_USD = 0.0123
# option -> takes a value ("variadic": every word up to the next option)
OPTIONS: dict[str, str | None] = {
    "--print": None,
    "--verbose": None,
    "--continue": None,
    "--fork-session": None,
    "--dangerously-skip-permissions": None,
    "--strict-mcp-config": None,
    "--version": None,
    "--output-format": "value",
    "--input-format": "value",
    "--session-id": "value",
    "--resume": "value",
    "--permission-mode": "value",
    "--model": "value",
    "--max-turns": "value",
    "--append-system-prompt": "value",
    "--system-prompt": "value",
    "--allowedTools": "variadic",
    "--disallowedTools": "variadic",
    "--add-dir": "variadic",
    "--mcp-config": "variadic",
}
ALIASES = {
    "-p": "--print",
    "-c": "--continue",
    "-r": "--resume",
    "-v": "--version",
    "--allowed-tools": "--allowedTools",
    "--disallowed-tools": "--disallowedTools",
}
CHOICES = {
    "--output-format": ("text", "json", "stream-json"),
    "--input-format": ("text", "stream-json"),
    "--permission-mode": PERMISSION_MODES,
}


def fail(text: str, code: int = 1) -> None:
    common.error(text)
    raise common.Exit(code)


def parse(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(options with their values, positional arguments)."""
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        if word == "--":
            positionals += argv[index:]
            break
        if not word.startswith("-") or word == "-":
            positionals.append(word)
            continue
        value: str | None = None
        if word.startswith("--") and "=" in word:
            word, value = word.split("=", 1)
        name = ALIASES.get(word, word)
        if name not in OPTIONS:
            fail(f"error: unknown option '{word}'")
        kind = OPTIONS[name]
        values = options.setdefault(name, [])
        if kind is None:
            continue
        if value is None:
            if index >= len(argv) or argv[index].startswith("-"):
                fail(f"error: option '{name} <value>' argument missing")
            value = argv[index]
            index += 1
        values.append(value)
        while kind == "variadic" and index < len(argv) and not argv[index].startswith("-"):
            values.append(argv[index])
            index += 1
        if name in CHOICES and value not in CHOICES[name]:
            allowed = ", ".join(CHOICES[name])
            fail(
                f"error: option '{name} <value>' argument '{value}' is invalid. Allowed "
                f"choices are {allowed}."
            )
    return options, positionals


def project_dir(cwd: str) -> Path:
    home = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    return home / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd)


def allowed(command: str, mode: str, rules: list[str]) -> bool:
    """Whether Bash may run ``command`` without asking (print mode never asks: it denies)."""
    if mode == "bypassPermissions":
        return True
    for rule in rules:
        for part in rule.replace(",", " ").split():
            if part == "Bash":
                return True
            found = re.fullmatch(r"Bash\((.*):\*\)", part)
            if found and command.startswith(found.group(1)):
                return True
    return False


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # node dies of SIGINT when it has no handler
    options, positionals = parse(argv)
    if "--version" in options:
        common.say(sys.stdout.buffer, f"{VERSION}\n".encode())
        return 0
    if "--print" not in options:
        fail("the fake claude implements only print mode (-p)")
    output_format = (options.get("--output-format") or ["text"])[-1]
    if output_format == "stream-json" and "--verbose" not in options:
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    resume = (options.get("--resume") or [None])[-1]
    chosen = (options.get("--session-id") or [None])[-1]
    if chosen is not None and (resume is not None or "--continue" in options):
        fail("Error: --session-id cannot be used with --continue or --resume.")
    mode = (options.get("--permission-mode") or ["default"])[-1]
    if "--dangerously-skip-permissions" in options:
        mode = "bypassPermissions"
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if mode == "bypassPermissions" and is_root and os.environ.get("IS_SANDBOX") != "1":
        fail(ROOT_REFUSAL)
    if len(positionals) > 1:
        fail(f"error: too many arguments. Expected 1 argument but got {len(positionals)}.")
    stdin = common.read_stdin()
    prompt = "\n".join(filter(None, [*positionals, stdin.strip()]))
    common.record(stdin=stdin)
    if not prompt:
        fail(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print"
        )
    wanted = common.directives(prompt)
    if "ignore_sigterm" in wanted:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cwd = os.getcwd()
    folder = project_dir(cwd)
    if resume is not None:
        session_id = resume
        if not (folder / f"{resume}.jsonl").is_file():
            said = RESUME_MISS.format(session_id=resume)
            if output_format != "text":
                common.emit(
                    result(
                        resume,
                        is_error=True,
                        subtype="error_during_execution",
                        errors=[said],
                        turns=0,
                        cost=0,
                    )
                )
            fail(said)
    elif chosen is not None:
        if not common.is_uuid(chosen):
            fail("Error: Invalid session ID. Must be a valid UUID.")
        if (folder / f"{chosen}.jsonl").exists():
            fail(f"Error: Session ID {chosen} is already in use.")
        session_id = chosen
    else:
        session_id = str(uuid.uuid4())
    folder.mkdir(parents=True, exist_ok=True)
    transcript = folder / f"{session_id}.jsonl"
    converse(transcript, session_id, prompt, wanted, mode, options, output_format)
    return 0


def converse(
    transcript: Path,
    session_id: str,
    prompt: str,
    wanted: dict[str, str],
    mode: str,
    options: dict[str, list[str]],
    output_format: str,
) -> None:
    """One print-mode conversation turn: the stream-json events and the transcript."""
    stream = output_format == "stream-json"

    def event(data: dict[str, Any], *, shown: bool = True) -> None:
        data = {**data, "session_id": session_id}
        if data["type"] in ("user", "assistant"):
            with transcript.open("a", encoding="utf-8") as file:
                file.write(json.dumps({**data, "cwd": os.getcwd()}) + "\n")
        if stream and shown:
            common.emit(data)

    def said(content: list[dict[str, Any]]) -> None:
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
        }
        event({"type": "assistant", "message": message, "parent_tool_use_id": None})

    event(
        {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "tools": ["Bash", "Edit"],
            "mcp_servers": [],
            "model": MODEL,
            "permissionMode": mode,
            "apiKeySource": "none",
            "claude_code_version": VERSION.split()[0],
            "output_style": "default",
        }
    )
    # the prompt goes to the transcript; print mode does not echo it
    event({"type": "user", "message": {"role": "user", "content": prompt}}, shown=False)
    common.noisy_scenarios(wanted, "claude")
    text = common.reply_text(wanted, "claude")
    denials: list[dict[str, Any]] = []
    if text is not None:
        command = "pal cli send " + common.quote_double(text)
        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        said([{"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": command}}])
        if allowed(command, mode, options.get("--allowedTools", [])):
            code, output = common.run_reply(text, dict(os.environ))
            outcome = {
                "content": output if code == 0 else f"Exit code {code}\n{output}",
                "is_error": code != 0,
            }
        else:
            denials.append(
                {"tool_name": "Bash", "tool_use_id": tool_id, "tool_input": {"command": command}}
            )
            outcome = {
                "content": "Claude requested permissions to use Bash, but you haven't "
                "granted it yet.",
                "is_error": True,
            }
        block = {"type": "tool_result", "tool_use_id": tool_id, **outcome}
        event({"type": "user", "message": {"role": "user", "content": [block]}})
    final = text if text is not None else "fake claude: done"
    if denials:
        final = "fake claude: I could not answer in the room: running pal was not allowed"
    if "is_error" in wanted:
        final = 'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}'
    said([{"type": "text", "text": final}])
    if "exit" in wanted:
        raise common.Exit(int(wanted["exit"]))
    outcome_event = result(
        session_id,
        is_error="is_error" in wanted,
        subtype="success",
        text=final,
        turns=2 if text is not None else 1,
        cost=COST_USD,
        denials=denials,
    )
    if output_format == "text":
        common.say(sys.stdout.buffer, final.encode() + b"\n")
    else:
        common.emit(outcome_event)


def result(
    session_id: str,
    *,
    is_error: bool,
    subtype: str,
    turns: int,
    cost: float,
    text: str | None = None,
    errors: list[str] | None = None,
    denials: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``result`` event (no ``result`` field when there is no text, as claude does)."""
    event: dict[str, Any] = {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "duration_ms": 12,
        "duration_api_ms": 10,
        "num_turns": turns,
        "session_id": session_id,
        "total_cost_usd": cost,
        "usage": USAGE if turns else {},
        "permission_denials": denials or [],
    }
    if text is not None:
        event["result"] = text
    if errors is not None:
        event["errors"] = errors
    return event


if __name__ == "__main__":
    common.run(main)
