"""Messages: post, page, search, show, threads, topics, idempotent retries; agent inboxes."""

from __future__ import annotations

import pytest

from pal.server.api.fields import MAX_CONTENT_CHARS
from tests.helpers import invite, make_agent, make_room, post


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["messages"]]


def test_messages_post_returns_the_stored_message(client):
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "alice", "content": "hello"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["duplicate"] is False
    assert body["suppressed"] is None
    assert body["deliveries"] == []
    message = body["message"]
    assert message["room"] == "general"
    assert message["sender"] == "alice"
    assert message["sender_kind"] == "human"
    assert message["content"] == "hello"
    assert message["mentions"] == []
    assert message["parent_id"] is None and message["topic_id"] is None
    assert message["created_at"].endswith("Z")
    assert client.get(f"/api/messages/{message['id']}").json()["message"] == message


def test_messages_ids_increase_across_rooms(client):
    make_room(client, "ops")
    a = post(client, "a")["message"]["id"]
    b = post(client, "b", room="ops")["message"]["id"]
    c = post(client, "c")["message"]["id"]
    assert a < b < c


def test_messages_post_accepts_chat_alias_and_room_id(client):
    room = make_room(client, "ops")
    r = client.post("/api/messages", json={"chat": "ops", "sender": "alice", "content": "x"})
    assert r.status_code == 201
    assert r.json()["message"]["room"] == "ops"
    by_id = post(client, "y", room=room["id"])
    assert by_id["message"]["room"] == "ops"
    assert by_id["message"]["room_id"] == room["id"]


def test_messages_post_keeps_content_exactly(client):
    text = "  line one\n\tline two ✓ — 中文 🙂  "
    message = post(client, text)["message"]
    assert client.get(f"/api/messages/{message['id']}").json()["message"]["content"] == text


def test_messages_post_accepts_content_at_the_limit(client):
    text = "x" * MAX_CONTENT_CHARS
    message = post(client, text)["message"]
    assert len(client.get(f"/api/messages/{message['id']}").json()["message"]["content"]) == (
        MAX_CONTENT_CHARS
    )


@pytest.mark.parametrize(
    "content, hint",
    [
        ("x" * (MAX_CONTENT_CHARS + 1), "65536"),
        ("", "content"),
        ("   \n\t", "content"),
        (None, "content"),
        (42, "content"),
        (["hi"], "content"),
    ],
    ids=["oversized", "empty", "whitespace", "null", "number", "list"],
)
def test_messages_post_rejects_bad_content(client, content, hint):
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "alice", "content": content}
    )
    assert r.status_code == 422
    assert "content" in r.json()["error"] and hint in r.json()["error"]
    assert ids(client.get("/api/messages")) == []


@pytest.mark.parametrize("sender", ["", " alice", "alice ", "x" * 81, None, 7])
def test_messages_post_rejects_bad_sender(client, sender):
    r = client.post("/api/messages", json={"room": "general", "sender": sender, "content": "x"})
    assert r.status_code == 422
    assert "sender" in r.json()["error"]


def test_messages_post_requires_room_sender_and_content(client):
    r = client.post("/api/messages", json={})
    assert r.status_code == 422
    error = r.json()["error"]
    for field in ("room", "sender", "content"):
        assert field in error
    assert "required" in error


def test_messages_post_unknown_room_is_404_naming_it(client):
    r = client.post("/api/messages", json={"room": "nope", "sender": "alice", "content": "x"})
    assert r.status_code == 404
    assert "room 'nope'" in r.json()["error"]


def test_messages_post_rejects_unknown_sender_kind(client):
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "alice", "content": "x", "sender_kind": "robot"},
    )
    assert r.status_code == 422
    assert "sender_kind" in r.json()["error"] and "human" in r.json()["error"]
    assert ids(client.get("/api/messages")) == []


def test_messages_post_sender_kind_agent_for_agent_keys(client):
    make_agent(client, "codex")
    assert post(client, "done", sender="codex")["message"]["sender_kind"] == "agent"
    assert post(client, "hi", sender="alice", sender_kind="system")["message"]["sender_kind"] == (
        "system"
    )


def test_system_notice_wakes_no_agent_even_when_it_mentions_one(client):
    make_agent(client, "codex")
    make_agent(client, "reviewer")
    invite(client, "general", "reviewer", "all")
    posted = post(client, "codex could not resume, @codex", sender="codex", sender_kind="system")
    assert posted["deliveries"] == []
    # a human message right after still routes normally
    assert {d["agent_key"] for d in post(client, "hi @codex")["deliveries"]} == {
        "reviewer",
        "codex",
    }


def test_messages_post_mentions_merge_field_and_text_without_duplicates(client):
    message = post(client, "@codex and @claude, also @codex", mentions=["@codex", "bob"])["message"]
    assert message["mentions"] == ["codex", "bob", "claude"]


def test_messages_post_email_address_is_not_a_mention(client):
    assert post(client, "mail alice@example.com")["message"]["mentions"] == []


@pytest.mark.parametrize(
    "mentions",
    ["codex", [1], ["x" * 81], ["a"] * 101],
    ids=["string", "number", "too-long", "too-many"],
)
def test_messages_post_rejects_bad_mentions(client, mentions):
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "alice", "content": "x", "mentions": mentions},
    )
    assert r.status_code == 422
    assert "mentions" in r.json()["error"]


def test_messages_get_unknown_is_404_naming_the_id(client):
    r = client.get("/api/messages/12345")
    assert r.status_code == 404
    assert "message 12345" in r.json()["error"]


@pytest.mark.parametrize("ref", ["abc", "1.5", str(2**64)])
def test_messages_get_rejects_ids_that_are_not_64_bit_integers(client, ref):
    r = client.get(f"/api/messages/{ref}")
    assert r.status_code == 422
    assert "message_id" in r.json()["error"]


def test_messages_list_pages_forward_with_after_and_limit(client):
    all_ids = [post(client, f"m{i}")["message"]["id"] for i in range(5)]
    assert ids(client.get("/api/messages")) == all_ids
    assert ids(client.get("/api/messages", params={"limit": 2})) == all_ids[:2]
    assert (
        ids(client.get("/api/messages", params={"after": all_ids[1], "limit": 2})) == all_ids[2:4]
    )
    assert ids(client.get("/api/messages", params={"after": all_ids[-1]})) == []


def test_messages_list_pages_back_with_before(client):
    all_ids = [post(client, f"m{i}")["message"]["id"] for i in range(5)]
    assert (
        ids(client.get("/api/messages", params={"before": all_ids[4], "limit": 2})) == all_ids[2:4]
    )
    assert ids(client.get("/api/messages", params={"before": all_ids[0]})) == []


def test_messages_list_filters_by_room_or_chat(client):
    room = make_room(client, "ops")
    post(client, "general one")
    ops = post(client, "ops one", room="ops")["message"]["id"]
    assert ids(client.get("/api/messages", params={"room": "ops"})) == [ops]
    assert ids(client.get("/api/messages", params={"chat": "ops"})) == [ops]
    assert ids(client.get("/api/messages", params={"room": room["id"]})) == [ops]
    assert len(ids(client.get("/api/messages"))) == 2


def test_messages_list_unknown_room_is_404(client):
    r = client.get("/api/messages", params={"chat": "nope"})
    assert r.status_code == 404
    assert "nope" in r.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": 2**63},
        {"before": 0},
        {"topic": "x"},
        {"parent": 2**64},
        {"q": "x" * 201},
    ],
    ids=str,
)
def test_messages_list_rejects_out_of_range_parameters(client, params):
    r = client.get("/api/messages", params=params)
    assert r.status_code == 422
    assert next(iter(params)) in r.json()["error"]


def test_messages_list_accepts_limit_of_1000(client):
    post(client, "x")
    assert len(ids(client.get("/api/messages", params={"limit": 1000}))) == 1


def test_messages_topic_is_set_and_filterable(client):
    topic = client.post("/api/rooms/general/topics", json={"title": "Bug"}).json()["topic"]
    post(client, "no topic")
    in_topic = post(client, "in topic", topic=topic["id"])["message"]
    assert in_topic["topic_id"] == topic["id"]
    assert ids(client.get("/api/messages", params={"topic": topic["id"]})) == [in_topic["id"]]


def test_messages_post_unknown_topic_is_404(client):
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "a", "content": "x", "topic": 999}
    )
    assert r.status_code == 404
    assert "topic 999" in r.json()["error"]


def test_messages_post_topic_of_another_room_is_422(client):
    make_room(client, "ops")
    topic = client.post("/api/rooms/ops/topics", json={"title": "Ops"}).json()["topic"]
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "a", "content": "x", "topic": topic["id"]},
    )
    assert r.status_code == 422
    assert "topic" in r.json()["error"]
    assert ids(client.get("/api/messages")) == []


def test_messages_reply_links_parent_inherits_topic_and_lists_by_parent(client):
    topic = client.post("/api/rooms/general/topics", json={"title": "Bug"}).json()["topic"]
    root = post(client, "root", topic=topic["id"])["message"]
    post(client, "unrelated")
    reply = post(client, "reply", parent=root["id"])["message"]
    assert reply["parent_id"] == root["id"]
    assert reply["topic_id"] == topic["id"]
    assert ids(client.get("/api/messages", params={"parent": root["id"]})) == [reply["id"]]


def test_messages_reply_to_unknown_parent_is_404(client):
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "a", "content": "x", "parent": 77}
    )
    assert r.status_code == 404
    assert "message 77" in r.json()["error"]


def test_messages_reply_to_parent_in_another_room_is_422(client):
    make_room(client, "ops")
    root = post(client, "root", room="ops")["message"]
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "a", "content": "x", "parent": root["id"]},
    )
    assert r.status_code == 422
    assert "parent" in r.json()["error"] and "ops" in r.json()["error"]
    assert ids(client.get("/api/messages", params={"room": "general"})) == []


@pytest.mark.parametrize("parent", ["1", True, 0, 1.5, 2**63])
def test_messages_post_rejects_parent_that_is_not_a_message_id(client, parent):
    post(client, "root")
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "a", "content": "x", "parent": parent}
    )
    assert r.status_code == 422
    assert "parent" in r.json()["error"]


def test_messages_client_msg_id_makes_a_retry_idempotent(client):
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    first = client.post(
        "/api/messages",
        json={"room": "general", "sender": "alice", "content": "hi", "client_msg_id": "abc-1"},
    )
    assert first.status_code == 201
    again = client.post(
        "/api/messages",
        json={"room": "general", "sender": "alice", "content": "hi", "client_msg_id": "abc-1"},
    )
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert again.json()["deliveries"] == first.json()["deliveries"]
    assert len(ids(client.get("/api/messages"))) == 1
    assert len(client.get("/api/deliveries").json()["deliveries"]) == 1


def test_messages_client_msg_id_is_per_sender(client):
    a = post(client, "hi", sender="alice", client_msg_id="same")["message"]["id"]
    b = post(client, "hi", sender="bob", client_msg_id="same")["message"]["id"]
    assert a != b
    assert post(client, "hi", sender="alice", client_msg_id="other")["message"]["id"] > b


def test_messages_search_matches_whole_words_all_of_them_any_case(client):
    a = post(client, "Deploy the API server today")["message"]["id"]
    b = post(client, "the server is down")["message"]["id"]
    post(client, "servers everywhere")
    assert ids(client.get("/api/messages", params={"q": "server"})) == [a, b]
    assert ids(client.get("/api/messages", params={"q": "SERVER deploy"})) == [a]
    assert ids(client.get("/api/messages", params={"q": "server missing"})) == []


def test_messages_search_combines_with_room_and_paging(client):
    make_room(client, "ops")
    post(client, "disk full")
    o1 = post(client, "disk full again", room="ops")["message"]["id"]
    o2 = post(client, "disk ok", room="ops")["message"]["id"]
    assert ids(client.get("/api/messages", params={"q": "disk", "room": "ops"})) == [o1, o2]
    assert ids(client.get("/api/messages", params={"q": "disk", "room": "ops", "after": o1})) == [
        o2
    ]
    assert ids(client.get("/api/messages", params={"q": "disk", "limit": 1})) != []


@pytest.mark.parametrize(
    "q", ['"', "a OR", "NEAR(x y)", "*", "x:y", "-", "'; DROP TABLE messages; --", "(", "^x", "%"]
)
def test_messages_search_treats_query_syntax_as_plain_text(client, q):
    post(client, "plain words here")
    r = client.get("/api/messages", params={"q": q})
    assert r.status_code == 200
    assert ids(client.get("/api/messages")) != []  # nothing dropped


def test_messages_search_finds_punctuated_words(client):
    a = post(client, "error: disk-full (again)!")["message"]["id"]
    assert ids(client.get("/api/messages", params={"q": "disk-full"})) == [a]
    assert ids(client.get("/api/messages", params={"q": "(again)"})) == [a]


def test_messages_search_is_case_insensitive_beyond_ascii(client):
    a = post(client, "École fermée aujourd'hui")["message"]["id"]
    b = post(client, "中文 测试")["message"]["id"]
    assert ids(client.get("/api/messages", params={"q": "école FERMÉE"})) == [a]
    assert ids(client.get("/api/messages", params={"q": "中文"})) == [b]


def test_messages_search_without_words_finds_nothing(client):
    post(client, "hello")
    assert ids(client.get("/api/messages", params={"q": "!!!"})) == []


def test_inbox_lists_messages_that_reached_the_agent_with_reason(client):
    make_agent(client, "codex")
    make_agent(client, "quiet")
    invite(client, "general", "codex", "mentions")
    invite(client, "general", "quiet", "muted")
    post(client, "not for anyone")
    m1 = post(client, "@codex please look")["message"]["id"]
    m2 = post(client, "@quiet fyi")["message"]["id"]
    body = client.get("/api/inbox", params={"agent": "codex"}).json()
    assert body["agent"] == "codex"
    assert [(m["id"], m["delivery_reason"], m["delivery_status"]) for m in body["messages"]] == [
        (m1, "mention", "pending")
    ]
    assert body["messages"][0]["content"] == "@codex please look"
    quiet = client.get("/api/inbox", params={"agent": "quiet"}).json()["messages"]
    assert [(m["id"], m["delivery_reason"], m["delivery_status"]) for m in quiet] == [
        (m2, "mention_muted", "muted")
    ]


def test_inbox_pages_with_after_and_limit(client):
    make_agent(client, "codex")
    invite(client, "general", "codex", "all")
    sent = [post(client, f"m{i}")["message"]["id"] for i in range(4)]
    assert ids(client.get("/api/inbox", params={"agent": "codex", "limit": 2})) == sent[:2]
    assert ids(client.get("/api/inbox", params={"agent": "codex", "after": sent[1]})) == sent[2:]


def test_inbox_unknown_agent_is_404_naming_it(client):
    r = client.get("/api/inbox", params={"agent": "ghost"})
    assert r.status_code == 404
    assert "agent 'ghost'" in r.json()["error"]


def test_inbox_requires_agent(client):
    r = client.get("/api/inbox")
    assert r.status_code == 422
    assert "agent" in r.json()["error"] and "required" in r.json()["error"]
