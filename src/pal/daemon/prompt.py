"""What an agent is told for one delivery: the message, who sent it and where, the recent
conversation, the run id, and how to answer with ``pal cli send``; for a periodic digest,
the room's messages since the last one and how to answer at the room's top level."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

CONTEXT_MESSAGES = 10
"""How many earlier messages of the room (same topic) the prompt quotes."""
CONTEXT_CHARS = 2000
"""Each quoted earlier message is cut to this many characters."""
MAX_PROMPT_BYTES = 100_000 if sys.platform != "win32" else 24_000
"""The prompt travels as one command-line argument: Linux refuses one over 128 KiB
(MAX_ARG_STRLEN) and Windows a whole command line over 32,767 characters. A longer prompt
loses its context, then the end of the message (the agent is told how to read it whole)."""


def thread_root(message: dict[str, Any]) -> int:
    """The message an answer replies to: the thread the message is in, else the message."""
    return int(message.get("parent_id") or message["id"])


def _where(message: dict[str, Any]) -> str:
    where = f'the pal chat room "{message["room"]}"'
    if message.get("topic_id"):
        where += f" (topic {message['topic_id']})"
    return where


def _quote(message: dict[str, Any]) -> str:
    text = str(message["content"])
    if len(text) > CONTEXT_CHARS:
        text = text[:CONTEXT_CHARS] + " […]"
    text = text.replace("\n", "\n    ")
    return f"[{message['id']}] {message['sender']}: {text}"


def build_prompt(
    *,
    agent: dict[str, Any],
    message: dict[str, Any],
    context: Sequence[dict[str, Any]],
    run_id: int,
    reason: str | None = None,
    max_bytes: int = MAX_PROMPT_BYTES,
) -> str:
    """The prompt for the run ``run_id`` of ``agent`` answering ``message``; ``context`` is
    the room's messages before it, oldest first. At most ``max_bytes`` of UTF-8."""
    prompt = _prompt(agent, message, context, run_id, reason)
    while len(prompt.encode()) > max_bytes and context:
        context = context[1:]  # the oldest context goes first
        prompt = _prompt(agent, message, context, run_id, reason)
    excess = len(prompt.encode()) - max_bytes
    if excess > 0:
        content = str(message["content"]).encode()
        note = (
            f"\n[… cut here: the message is longer; read it whole with "
            f"`pal cli messages show {message['id']}`]"
        )
        keep = max(0, len(content) - excess - len(note.encode()))
        cut = content[:keep].decode(errors="ignore") + note
        prompt = _prompt(agent, {**message, "content": cut}, context, run_id, reason)
    return prompt


def _prompt(
    agent: dict[str, Any],
    message: dict[str, Any],
    context: Sequence[dict[str, Any]],
    run_id: int,
    reason: str | None,
) -> str:
    key = agent["key"]
    name = agent.get("display_name") or key
    lines = [
        f'You are {name} (agent key "{key}"), working in {_where(message)}.',
        "",
    ]
    head = f"{message['sender']} wrote (message {message['id']}"
    if message.get("parent_id"):
        head += f", in the thread of message {message['parent_id']}"
    head += ")"
    if reason:
        head += f"; you got it because: {reason}"
    lines += [head + ":", "", "<message>", str(message["content"]), "</message>", ""]
    if context:
        lines.append("Recent messages in the room before it, oldest first:")
        lines += [_quote(m) for m in context]
        lines.append("")
    lines += [
        f"This is pal run {run_id}. Do what the message asks, in the current directory.",
        "",
        "To answer in the room, run:",
        '    pal cli send "your answer"',
        f"It posts as {key} in this room, in the thread of message {thread_root(message)}.",
        "For long text use `pal cli send --file PATH`; add `--mention KEY` to bring in "
        "another agent. `pal cli messages list --room "
        f'"{message["room"]}"` shows the conversation. To share a file (a report, a page), '
        "run `pal cli http file PATH --title TITLE` and put the URL it prints in your answer.",
        "A reply is only a message: your run ends when you exit, so answer before you finish.",
    ]
    return "\n".join(lines) + "\n"


# -- digests -----------------------------------------------------------------------------------

DIGEST_MESSAGES = 200
"""How many of a digest's messages the daemon reads (the newest); the prompt quotes the newest
of them that fit in :data:`MAX_PROMPT_BYTES`."""


def is_digest(delivery: dict[str, Any]) -> bool:
    """A periodic digest covers the room's messages in ``(digest_after, message_id]``."""
    return delivery.get("digest_after") is not None


def _digest_quote(message: dict[str, Any]) -> str:
    quoted = _quote(message)
    where = []
    if message.get("topic_id"):
        where.append(f"topic {message['topic_id']}")
    if message.get("parent_id"):
        where.append(f"in the thread of message {message['parent_id']}")
    if not where:
        return quoted
    ident = f"[{message['id']}]"
    return f"{ident} ({', '.join(where)}){quoted[len(ident) :]}"


def build_digest_prompt(
    *,
    agent: dict[str, Any],
    room: str,
    messages: Sequence[dict[str, Any]],
    run_id: int,
    digest_after: int,
    more: bool = False,
    max_bytes: int = MAX_PROMPT_BYTES,
) -> str:
    """The prompt for the digest run ``run_id``: the room's ``messages`` since the agent's
    last digest (oldest first; its own and system notices are left out), ``more`` when
    earlier ones were not read. The oldest are left out until it fits in ``max_bytes``, and
    the agent is told how to read them."""
    covered = [
        m for m in messages if m["sender"] != agent["key"] and m.get("sender_kind") != "system"
    ]
    shown = covered
    prompt = _digest_prompt(agent, room, covered, shown, run_id, digest_after, more)
    while len(prompt.encode()) > max_bytes and len(shown) > 1:
        shown = shown[1:]  # the oldest go first
        prompt = _digest_prompt(agent, room, covered, shown, run_id, digest_after, more)
    return prompt


def _digest_prompt(
    agent: dict[str, Any],
    room: str,
    covered: Sequence[dict[str, Any]],
    shown: Sequence[dict[str, Any]],
    run_id: int,
    digest_after: int,
    more: bool,
) -> str:
    key = agent["key"]
    name = agent.get("display_name") or key
    count = f"{len(covered)}{' or more' if more else ''}"
    noun = "message" if len(covered) == 1 and not more else "messages"
    lines = [
        f'You are {name} (agent key "{key}"), working in the pal chat room "{room}".',
        "",
        f'{count} new {noun} in "{room}" since your last digest (your room mode is '
        "periodic: you get a digest of the room every period, and a mentioned message at "
        "once). Oldest first:",
        "",
    ]
    hidden = len(covered) - len(shown)
    if hidden or more:
        lines += [
            f"[… {'earlier messages are' if more else f'{hidden} earlier messages are'} not "
            f'shown here; read them with `pal cli messages list --room "{room}" '
            f"--after {digest_after}`]",
            "",
        ]
    lines += ["<messages>", *(_digest_quote(m) for m in shown), "</messages>", ""]
    lines += [
        f"This is pal run {run_id}. Read them and act on what concerns you; if nothing "
        "does, you need not answer.",
        "",
        "To answer in the room, run:",
        '    pal cli send "your answer"',
        f"It posts as {key} in this room, at the top level; to answer in the thread of "
        "one of these messages, add `--parent MESSAGE_ID`.",
        "For long text use `pal cli send --file PATH`; add `--mention KEY` to bring in "
        "another agent. To share a file (a report, a page), run `pal cli http file PATH "
        "--title TITLE` and put the URL it prints in your answer.",
        "A reply is only a message: your run ends when you exit, so answer before you finish.",
    ]
    return "\n".join(lines) + "\n"
