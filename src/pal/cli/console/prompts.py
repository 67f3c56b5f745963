"""The questions ``--interactive`` asks, on stderr (stdout stays for ``--json``).

Answers may come from a terminal or be piped in, one a line. Input that ends before every
question is answered (no terminal, ``< /dev/null``, Ctrl-D) fails the command with one clear
line and exit status 2, never a traceback.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence

import typer

from pal.cli import output


def ask(
    question: str,
    default: str | None = None,
    *,
    empty: str | None = None,
    secret: bool = False,
    choices: Sequence[str] = (),
) -> str:
    """Prompt until answered and return the answer, stripped; a blank answer takes
    ``default``, else ``empty`` (when not ``None``). ``secret`` hides the typing when the
    input is a terminal; ``choices`` lists the only answers accepted."""
    shown = f" [{default}]" if default and not secret else ""
    while True:
        answer = _read(question, f"{question}{shown}: ", hidden=secret).strip()
        if not answer:
            answer = default if default is not None else (empty if empty is not None else "")
            if not answer and empty is None:
                continue
        if not choices or answer in choices:
            return answer
        typer.echo(f"Error: {answer!r} is not one of {', '.join(map(repr, choices))}", err=True)


def _read(question: str, prompt: str, *, hidden: bool) -> str:
    """One line of input after ``prompt`` (on stderr: the prompt never reaches stdout)."""
    try:
        if hidden and _stdin_is_terminal():
            return getpass.getpass(prompt, stream=sys.stderr)
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if line and not _stdin_is_terminal():
            sys.stderr.write("\n")  # piped answers are not echoed: end the prompt's line
    except (KeyboardInterrupt, EOFError, OSError, ValueError):
        line = ""
    if not line:
        typer.echo("", err=True)
        output.fail(
            f"no answer to {question!r}: the input ended (or Ctrl-C). "
            "--interactive asks questions: run it in a terminal or pipe the answers in, one a "
            "line; or give the command's options instead of --interactive",
            output.EXIT_USAGE,
        )
    return line.rstrip("\r\n")


def choose(question: str, options: list[tuple[str, str]], default: str) -> str:
    """Show numbered ``(value, label)`` options and return the chosen value."""
    for number, (_, label) in enumerate(options, 1):
        typer.echo(f"  {number}) {label}", err=True)
    values = [value for value, _ in options]
    numbers = [str(n) for n in range(1, len(values) + 1)]
    picked = ask(question, str(values.index(default) + 1), choices=numbers)
    return values[int(picked) - 1]


def confirm(question: str, default: bool = False) -> bool:
    """A yes or no question; a blank answer is ``default``."""
    answer = ask(
        f"{question} [{'Y/n' if default else 'y/N'}]",
        empty="",
        choices=("", "y", "yes", "n", "no", "Y", "N"),
    )
    return answer.lower().startswith("y") if answer else default


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False
