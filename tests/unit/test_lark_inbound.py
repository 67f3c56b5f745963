"""Which Lark events reach an agent, and the text they become (pal.lark.inbound)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pal.lark.inbound import Ignored, Inbound, message_text, read_event

BOT = "ou_bot"


def envelope(
    *,
    event_type: str = "im.message.receive_v1",
    sender_type: str = "user",
    chat_type: str = "p2p",
    message_type: str = "text",
    content: Any = None,
    mentions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {"event_type": event_type},
        "event": {
            "sender": {
                "sender_type": sender_type,
                "sender_id": {"union_id": "on_a", "open_id": "ou_a", "user_id": ""},
            },
            "message": {
                "message_id": "om_1",
                "chat_id": "oc_1",
                "chat_type": chat_type,
                "message_type": message_type,
                "content": json.dumps(content if content is not None else {"text": "hi"}),
                "mentions": mentions or [],
            },
        },
    }


def at(key: str, open_id: str, name: str) -> dict[str, Any]:
    return {"key": key, "id": {"open_id": open_id, "union_id": ""}, "name": name}


def test_p2p_text_from_a_user_reaches_the_agent_with_the_senders_ids():
    assert read_event(envelope(), BOT) == Inbound(
        "om_1", "oc_1", "p2p", "hi", {"union_id": "on_a", "open_id": "ou_a"}
    )


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"event_type": "im.message.reaction.created_v1"}, "event type im.message.reaction"),
        ({"sender_type": "app"}, "sent by a app, not a user"),
        ({"chat_type": "group"}, "a group message that does not @-mention this bot"),
        (
            {"chat_type": "group", "mentions": [at("@_user_1", "ou_other", "Other")]},
            "a group message that does not @-mention this bot",
        ),
    ],
)
def test_events_that_reach_no_agent_say_why(changes, why):
    decision = read_event(envelope(**changes), BOT)
    assert isinstance(decision, Ignored) and decision.detail.startswith(why)


def test_a_group_mention_of_this_bot_reaches_it_without_the_mention():
    mentions = [at("@_user_1", BOT, "Codex"), at("@_user_2", "ou_bob", "Bob")]
    content = {"text": "@_user_1  ask @_user_2 too"}
    decision = read_event(envelope(chat_type="group", mentions=mentions, content=content), BOT)
    assert isinstance(decision, Inbound) and decision.text == "ask @Bob too"


def test_a_group_message_when_the_bots_open_id_is_unknown_says_how_to_fix():
    decision = read_event(envelope(chat_type="group"), None)
    assert isinstance(decision, Ignored) and "open_id is unknown" in decision.detail


@pytest.mark.parametrize(
    ("message_type", "content", "text"),
    [
        ("image", '{"image_key": "img_1"}', "[image]"),
        ("file", '{"file_key": "f"}', "[file]"),
        ("something_new", "{}", "[something_new]"),
        ("text", "not json", "[empty message]"),
        (
            "post",
            json.dumps(
                {
                    "zh_cn": {
                        "title": "Plan",
                        "content": [
                            [
                                {"tag": "text", "text": "step "},
                                {"tag": "at", "user_id": "@_user_1"},
                            ],
                            [{"tag": "img", "image_key": "i"}],
                        ],
                    }
                }
            ),
            "Plan\nstep @Bob\n[image]",
        ),
    ],
)
def test_message_text_of_each_type(message_type, content, text):
    mentions = [at("@_user_1", "ou_bob", "Bob")]
    assert message_text(message_type, content, mentions, BOT) == text
