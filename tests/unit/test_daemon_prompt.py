"""The prompt an agent gets for a delivery."""

from __future__ import annotations

from pal.daemon.prompt import (
    CONTEXT_CHARS,
    build_digest_prompt,
    build_prompt,
    is_digest,
    thread_root,
)

AGENT = {"key": "codex", "display_name": "Codex Agent"}


def message(**fields: object) -> dict[str, object]:
    return {
        "id": 12,
        "room": "general",
        "topic_id": None,
        "parent_id": None,
        "sender": "alice",
        "content": "fix the failing test",
        **fields,
    }


def test_the_prompt_names_the_message_sender_room_run_and_how_to_answer() -> None:
    prompt = build_prompt(agent=AGENT, message=message(), context=[], run_id=77, reason="mention")
    assert 'You are Codex Agent (agent key "codex")' in prompt
    assert 'the pal chat room "general"' in prompt
    assert "alice wrote (message 12); you got it because: mention" in prompt
    assert "<message>\nfix the failing test\n</message>" in prompt
    assert "pal run 77" in prompt
    assert 'pal cli send "your answer"' in prompt
    assert "in the thread of message 12" in prompt
    assert "Recent messages" not in prompt


def test_the_prompt_quotes_recent_context_and_keeps_threads_and_topics() -> None:
    context = [
        {"id": 10, "sender": "bob", "content": "the build is red"},
        {"id": 11, "sender": "codex", "content": "x" * (CONTEXT_CHARS + 50)},
    ]
    prompt = build_prompt(
        agent=AGENT, message=message(parent_id=9, topic_id=4), context=context, run_id=1
    )
    assert "(topic 4)" in prompt
    assert "(message 12, in the thread of message 9)" in prompt
    assert "[10] bob: the build is red" in prompt
    assert "x" * CONTEXT_CHARS + " […]" in prompt and "x" * (CONTEXT_CHARS + 1) not in prompt
    assert prompt.index("[10]") < prompt.index("[11]")
    assert "in the thread of message 9." in prompt


def test_answers_go_to_the_thread_root() -> None:
    assert thread_root(message()) == 12
    assert thread_root(message(parent_id=3)) == 3


def test_a_prompt_too_big_for_a_command_line_drops_context_then_cuts_the_message() -> None:
    context = [{"id": i, "sender": "bob", "content": "c" * 1000} for i in range(10)]
    huge = message(content="字" * 65_536)  # 3 bytes each: 196 KiB
    prompt = build_prompt(agent=AGENT, message=huge, context=context, run_id=1, max_bytes=100_000)
    assert len(prompt.encode()) <= 100_000
    assert "Recent messages" not in prompt
    assert "read it whole with `pal cli messages show 12`" in prompt
    assert 'pal cli send "your answer"' in prompt  # how to answer is never cut
    small = build_prompt(agent=AGENT, message=message(), context=context, run_id=1, max_bytes=8000)
    assert "[9] bob" in small and "[0] bob" not in small  # the newest context stays
    assert len(small.encode()) <= 8000


# -- digests -----------------------------------------------------------------------------------


def covered(count: int, **fields: object) -> list[dict[str, object]]:
    return [
        {
            "id": 20 + i,
            "sender": "alice",
            "sender_kind": "human",
            "content": f"update {i}",
            "topic_id": None,
            "parent_id": None,
            **fields,
        }
        for i in range(count)
    ]


def test_a_digest_prompt_lists_the_new_messages_and_answers_at_the_top_level() -> None:
    messages = covered(5)
    messages[3] = {**messages[3], "parent_id": 20, "topic_id": 2}
    messages.insert(2, {**messages[0], "id": 90, "sender": "codex", "content": "mine"})
    messages.insert(3, {**messages[0], "id": 91, "sender_kind": "system", "content": "notice"})
    prompt = build_digest_prompt(
        agent=AGENT, room="general", messages=messages, run_id=8, digest_after=19
    )
    assert 'You are Codex Agent (agent key "codex")' in prompt
    assert '5 new messages in "general" since your last digest' in prompt
    assert "[20] alice: update 0" in prompt and "[24] alice: update 4" in prompt
    assert prompt.index("[20]") < prompt.index("[24]")
    assert "[23] (topic 2, in the thread of message 20) alice: update 3" in prompt
    assert "mine" not in prompt and "notice" not in prompt  # its own, and system notices
    assert "pal run 8" in prompt and 'pal cli send "your answer"' in prompt
    assert "at the top level" in prompt and "--parent MESSAGE_ID" in prompt
    assert "not shown" not in prompt


def test_a_digest_prompt_too_big_keeps_the_newest_and_says_how_to_read_the_rest() -> None:
    messages = covered(60, content="m" * 2000)
    prompt = build_digest_prompt(
        agent=AGENT, room="general", messages=messages, run_id=1, digest_after=19, max_bytes=20_000
    )
    assert len(prompt.encode()) <= 20_000
    assert "60 new messages" in prompt
    assert "[79] alice" in prompt and "[20] alice" not in prompt  # the newest stay
    pointer = '`pal cli messages list --room "general" --after 19`'
    assert f"earlier messages are not shown here; read them with {pointer}" in prompt
    assert 'pal cli send "your answer"' in prompt  # how to answer is never cut


def test_a_digest_with_more_messages_than_were_read_says_so() -> None:
    prompt = build_digest_prompt(
        agent=AGENT, room="ops", messages=covered(3), run_id=1, digest_after=7, more=True
    )
    assert '3 or more new messages in "ops"' in prompt
    assert '`pal cli messages list --room "ops" --after 7`' in prompt


def test_a_digest_delivery_is_told_apart_by_digest_after() -> None:
    assert is_digest({"reason": "digest", "digest_after": 0})
    assert not is_digest({"reason": "mention", "digest_after": None})
    assert not is_digest({"reason": "mention"})
