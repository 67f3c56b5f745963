"""What a received Lark event asks of the bridge: pure decisions, no I/O.

:func:`read_event` turns one schema 2.0 envelope into an :class:`Inbound` message for the
bot's agent, or an :class:`Ignored` with the reason (shown by ``pal console lark events``):
only ``im.message.receive_v1`` from a human (``sender_type`` ``user``), in a p2p chat or in a
group where the message @-mentions this bot (its ``open_id``), reaches an agent.

The text: a ``text`` message's ``{"text": ...}``, with the mention keys (``@_user_1``)
replaced by ``@name`` and the bot's own mention dropped; a ``post`` (rich text) is flattened
to its text; other types become a short placeholder such as ``[image]``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MESSAGE_EVENT = "im.message.receive_v1"
MAX_TEXT = 65_536
PLACEHOLDERS = {
    "image": "[image]",
    "file": "[file]",
    "audio": "[audio]",
    "media": "[video]",
    "sticker": "[sticker]",
    "interactive": "[card]",
    "share_chat": "[shared chat]",
    "share_user": "[shared contact]",
    "location": "[location]",
    "merge_forward": "[forwarded messages]",
}
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class Ignored:
    """The event reaches no agent; ``detail`` says why."""

    detail: str


@dataclass(frozen=True)
class Inbound:
    """A message from a human for the bot's agent."""

    message_id: str
    chat_id: str
    chat_type: str
    text: str
    sender_ids: dict[str, str] = field(default_factory=dict)  # union_id, open_id, user_id


def _object(parent: Any, key: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def _string(parent: dict[str, Any], key: str) -> str:
    value = parent.get(key)
    return value if isinstance(value, str) else ""


def read_event(event: dict[str, Any], bot_open_id: str | None) -> Inbound | Ignored:
    """The message in ``event`` for the bot whose own open_id is ``bot_open_id``, or why
    it is ignored."""
    header = _object(event, "header")
    event_type = _string(header, "event_type")
    if event_type != MESSAGE_EVENT:
        return Ignored(f"event type {event_type or '(none)'} is not handled (only {MESSAGE_EVENT})")
    body = _object(event, "event")
    sender = _object(body, "sender")
    sender_type = _string(sender, "sender_type")
    if sender_type != "user":
        return Ignored(f"sent by a {sender_type or 'sender of no type'}, not a user")
    message = _object(body, "message")
    message_id, chat_id = _string(message, "message_id"), _string(message, "chat_id")
    if not message_id or not chat_id:
        return Ignored("the event has no message_id or chat_id")
    chat_type = _string(message, "chat_type")
    mentions = [m for m in message.get("mentions") or [] if isinstance(m, dict)]
    if chat_type != "p2p":
        if not bot_open_id:
            return Ignored(
                "a group message, and this bot's open_id is unknown so its mentions cannot be "
                "told; set it with `pal console agents update --lark-app-id ...` (it reads it "
                "from Lark)"
            )
        if not any(_object(m, "id").get("open_id") == bot_open_id for m in mentions):
            return Ignored("a group message that does not @-mention this bot")
    ids = _object(sender, "sender_id")
    sender_ids = {k: v for k in ("union_id", "open_id", "user_id") if (v := _string(ids, k))}
    text = message_text(
        _string(message, "message_type"), _string(message, "content"), mentions, bot_open_id
    )
    return Inbound(message_id, chat_id, chat_type or "p2p", text, sender_ids)


def message_text(
    message_type: str, content: str, mentions: list[dict[str, Any]], bot_open_id: str | None
) -> str:
    """The text a pal message gets for a Lark message (see the module docstring)."""
    try:
        parsed = json.loads(content) if content else {}
    except ValueError:
        parsed = {}
    if message_type == "text":
        text = parsed.get("text") if isinstance(parsed, dict) else None
        text = text if isinstance(text, str) else ""
    elif message_type == "post":
        text = _post_text(parsed)
    else:
        return PLACEHOLDERS.get(message_type, f"[{message_type or 'message'}]")
    for mention in mentions:
        key = _string(mention, "key")
        if not key:
            continue
        own = bool(bot_open_id) and _object(mention, "id").get("open_id") == bot_open_id
        name = _string(mention, "name") or "someone"
        text = text.replace(key, "" if own else f"@{name}")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()
    return (text or "[empty message]")[:MAX_TEXT]


def _post_text(parsed: Any) -> str:
    """The text of a rich-text ``post``: its title and the text of each paragraph."""
    if not isinstance(parsed, dict):
        return ""
    # A post is {"title", "content"} or, per language, {"zh_cn": {"title", "content"}}.
    if "content" not in parsed:
        parsed = next((v for v in parsed.values() if isinstance(v, dict)), {})
    lines = [parsed["title"]] if isinstance(parsed.get("title"), str) and parsed["title"] else []
    for paragraph in parsed.get("content") or []:
        words = []
        for item in paragraph if isinstance(paragraph, list) else []:
            if not isinstance(item, dict):
                continue
            tag = item.get("tag")
            if tag in ("text", "a", "code_block") and isinstance(item.get("text"), str):
                words.append(item["text"])
            elif tag == "at" and isinstance(item.get("user_id"), str):
                words.append(item["user_id"])  # a mention key, replaced like a text's
            elif tag in ("img", "media"):
                words.append(PLACEHOLDERS["image" if tag == "img" else "media"])
        lines.append("".join(words))
    return "\n".join(lines)
