"""Routing: who a new message wakes, and why (DESIGN.md §5).

First the pure ``decide()`` function, then the same rules through ``POST /api/messages`` on
both backends (mentions from text, threads, the per-room loop guard, recorded reasons).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pal.server.routing import MODES, Route, decide, text_mentions
from tests.helpers import invite, make_agent, make_room, post, routed


def route(
    modes: dict[str, str],
    *,
    sender: str = "alice",
    mentioned: set[str] = frozenset(),
    known: set[str] | None = None,
    thread: set[str] = frozenset(),
) -> dict[str, tuple[str, str]]:
    routes = decide(
        sender=sender,
        mentioned=set(mentioned),
        modes=modes,
        known_agents=set(modes) | set(mentioned) if known is None else known,
        thread_agents=set(thread),
    )
    return {r.agent_key: (r.reason, r.status) for r in routes}


# -- decide(): one rule at a time --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", {"a": ("all", "pending")}),
        ("mentions", {}),
        ("periodic", {}),
        ("muted", {}),
        ("off", {}),
    ],
)
def test_decide_unmentioned_member_by_mode(mode, expected):
    assert route({"a": mode}) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", {"a": ("mention", "pending")}),
        ("mentions", {"a": ("mention", "pending")}),
        ("periodic", {"a": ("mention", "pending")}),
        ("muted", {"a": ("mention_muted", "muted")}),
        ("off", {}),
    ],
)
def test_decide_mentioned_member_by_mode(mode, expected):
    assert route({"a": mode}, mentioned={"a"}) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mentions", {"a": ("thread", "pending")}),
        ("all", {"a": ("all", "pending")}),
        ("periodic", {}),
        ("muted", {}),
        ("off", {}),
    ],
)
def test_decide_thread_reply_by_mode(mode, expected):
    assert route({"a": mode}, thread={"a"}) == expected


def test_decide_mention_beats_thread():
    assert route({"a": "mentions"}, mentioned={"a"}, thread={"a"}) == {"a": ("mention", "pending")}


def test_decide_mentioned_non_member_agent_is_delivered():
    assert route({}, mentioned={"b"}) == {"b": ("mention_nonmember", "pending")}


def test_decide_mentioned_name_that_is_no_agent_gets_nothing():
    assert route({"a": "all"}, mentioned={"bob"}, known={"a"}) == {"a": ("all", "pending")}


def test_decide_thread_agent_that_is_no_member_gets_nothing():
    assert route({}, thread={"a"}, known={"a"}) == {}


@pytest.mark.parametrize("mode", MODES)
def test_decide_never_delivers_the_sender_its_own_message(mode):
    assert route({"a": mode}, sender="a", mentioned={"a"}, thread={"a"}) == {}


def test_decide_never_delivers_a_non_member_sender_mentioning_itself():
    assert route({}, sender="a", mentioned={"a"}) == {}


def test_decide_mixes_members_and_non_members_in_key_order():
    routes = decide(
        sender="alice",
        mentioned={"m", "z"},
        modes={"c": "all", "m": "mentions", "q": "mentions"},
        known_agents={"c", "m", "q", "z"},
        thread_agents=set(),
    )
    assert routes == [
        Route("c", "all"),
        Route("m", "mention"),
        Route("z", "mention_nonmember"),
    ]


@given(
    modes=st.dictionaries(st.sampled_from("abcdef"), st.sampled_from(MODES), max_size=6),
    mentioned=st.sets(st.sampled_from("abcdefgh")),
    thread=st.sets(st.sampled_from("abcdefgh")),
    sender=st.sampled_from("abcdefgh"),
)
def test_decide_invariants(modes, mentioned, thread, sender):
    known = set("abcdefg")  # "h" is a person, not an agent
    routes = decide(
        sender=sender, mentioned=mentioned, modes=modes, known_agents=known, thread_agents=thread
    )
    keys = [r.agent_key for r in routes]
    assert len(keys) == len(set(keys))  # at most one delivery per agent
    assert sender not in keys
    assert "h" not in keys
    for r in routes:
        mode = modes.get(r.agent_key)
        assert mode != "off"
        assert (r.status == "muted") == (mode == "muted")
        if mode in ("muted", "periodic"):
            assert r.agent_key in mentioned
        if mode is None:
            assert r.reason == "mention_nonmember" and r.agent_key in mentioned
    for key, mode in modes.items():  # nobody who should be woken is left out
        if key != sender and (mode == "all" or (mode != "off" and key in mentioned)):
            assert key in keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@codex hi", ["codex"]),
        ("hi @codex, and @claude-2!", ["codex", "claude-2"]),
        ("(@codex)", ["codex"]),
        ("mail me at bob@codex.dev", []),
        ("@@codex", []),
        ("no mentions", []),
        ("@-bad", []),
    ],
)
def test_text_mentions_finds_at_keys(text, expected):
    assert text_mentions(text) == expected


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
def agents(client):
    """codex (all), rev (mentions), per (periodic), quiet (muted), gone (off), out (no member)."""
    for key, mode in [
        ("codex", "all"),
        ("rev", "mentions"),
        ("per", "periodic"),
        ("quiet", "muted"),
        ("gone", "off"),
    ]:
        make_agent(client, key)
        invite(client, "general", key, mode)
    make_agent(client, "out")
    return client


def test_routing_plain_message_reaches_only_mode_all(agents):
    assert routed(post(agents, "good morning")) == {"codex": "all"}


def test_routing_mentions_field_and_text_reach_each_mode(agents):
    body = post(agents, "@per @quiet please", mentions=["rev", "gone", "out", "codex"])
    assert routed(body) == {
        "codex": "mention",
        "rev": "mention",
        "per": "mention",
        "quiet": "mention_muted",
        "out": "mention_nonmember",
    }
    status = {d["agent_key"]: d["status"] for d in body["deliveries"]}
    assert status["quiet"] == "muted"
    assert {k for k, s in status.items() if s == "pending"} == {"codex", "rev", "per", "out"}


def test_routing_at_key_in_text_is_a_mention(agents):
    assert routed(post(agents, "hey @rev can you check?")) == {"codex": "all", "rev": "mention"}


def test_routing_mention_of_a_person_creates_no_delivery(agents):
    assert routed(post(agents, "@bob look", mentions=["carol"])) == {"codex": "all"}


def test_routing_muted_mention_is_not_pending_work(agents):
    post(agents, "@quiet fyi")
    pending = agents.get("/api/deliveries", params={"status": "pending"}).json()["deliveries"]
    assert "quiet" not in {d["agent_key"] for d in pending}
    muted = agents.get("/api/deliveries", params={"agent": "quiet"}).json()["deliveries"]
    assert [(d["reason"], d["status"]) for d in muted] == [("mention_muted", "muted")]


def test_routing_off_gets_nothing_even_when_mentioned(agents):
    post(agents, "@gone are you there?")
    assert agents.get("/api/deliveries", params={"agent": "gone"}).json()["deliveries"] == []


def test_routing_agent_never_gets_its_own_message(agents):
    assert routed(post(agents, "I (codex) am done, @codex", sender="codex")) == {}
    assert routed(post(agents, "talking to myself @out", sender="out")) == {"codex": "all"}


def test_routing_agent_message_reaches_other_agents(agents):
    body = post(agents, "@rev please review", sender="codex")
    assert body["message"]["sender_kind"] == "agent"
    assert routed(body) == {"rev": "mention"}


def test_routing_reason_is_recorded_on_the_delivery(agents):
    body = post(agents, "@rev and @out")
    for delivery in body["deliveries"]:
        stored = agents.get(f"/api/deliveries/{delivery['id']}").json()["delivery"]
        assert stored["reason"] == delivery["reason"]
        assert stored["message_id"] == body["message"]["id"]
    assert {d["reason"] for d in body["deliveries"]} == {"all", "mention", "mention_nonmember"}


def test_routing_thread_reply_wakes_a_member_who_posted_in_the_thread(agents):
    root = post(agents, "something is broken")["message"]["id"]
    post(agents, "unrelated")
    post(agents, "@rev what do you think?", parent=root)
    post(agents, "looks like the cache", sender="rev", parent=root)
    assert routed(post(agents, "thanks, how do we fix it?", parent=root)) == {
        "codex": "all",
        "rev": "thread",
    }
    # outside the thread rev is not woken
    assert routed(post(agents, "another topic")) == {"codex": "all"}


def test_routing_thread_reply_wakes_the_agent_that_started_the_thread(agents):
    root = post(agents, "status report", sender="rev")["message"]["id"]
    assert routed(post(agents, "nice", parent=root)) == {"codex": "all", "rev": "thread"}


def test_routing_thread_reply_without_agent_posts_wakes_no_mentions_member(agents):
    root = post(agents, "root")["message"]["id"]
    post(agents, "reply", sender="bob", parent=root)
    assert routed(post(agents, "reply two", parent=root)) == {"codex": "all"}


def test_routing_thread_includes_replies_to_replies(agents):
    root = post(agents, "root")["message"]["id"]
    reply = post(agents, "first reply", parent=root)["message"]["id"]
    post(agents, "deep answer", sender="rev", parent=reply)
    assert routed(post(agents, "back at the root", parent=root)) == {
        "codex": "all",
        "rev": "thread",
    }


def test_routing_non_member_who_posted_in_thread_is_not_woken(agents):
    root = post(agents, "root")["message"]["id"]
    post(agents, "drive-by", sender="out", parent=root)
    assert routed(post(agents, "ok", parent=root)) == {"codex": "all"}


@pytest.fixture
def loop_room(client):
    """Room ``loop`` (hop_limit 2) with agents a and b in mode ``all``."""
    make_room(client, "loop", settings={"hop_limit": 2})
    for key in ("a", "b"):
        make_agent(client, key)
        invite(client, "loop", key, "all")
    return client


def test_routing_hop_limit_stops_agent_ping_pong(loop_room):
    c = loop_room
    assert routed(post(c, "start", room="loop")) == {"a": "all", "b": "all"}
    assert routed(post(c, "hop 1", room="loop", sender="a")) == {"b": "all"}
    assert routed(post(c, "hop 2", room="loop", sender="b")) == {"a": "all"}
    stopped = post(c, "hop 3", room="loop", sender="a")
    assert stopped["deliveries"] == []
    assert "loop guard" in stopped["suppressed"] and "hop_limit of 2" in stopped["suppressed"]
    assert post(c, "hop 4", room="loop", sender="b")["deliveries"] == []
    # the suppressed messages are still stored
    assert len(c.get("/api/messages", params={"room": "loop"}).json()["messages"]) == 5


def test_routing_human_message_resets_the_hop_count(loop_room):
    c = loop_room
    for i, sender in enumerate(["a", "b", "a"]):
        post(c, f"hop {i}", room="loop", sender=sender)
    assert post(c, "stuck", room="loop", sender="b")["deliveries"] == []
    assert routed(post(c, "carry on", room="loop", sender="alice")) == {"a": "all", "b": "all"}
    assert routed(post(c, "again 1", room="loop", sender="a")) == {"b": "all"}
    assert routed(post(c, "again 2", room="loop", sender="b")) == {"a": "all"}
    assert post(c, "again 3", room="loop", sender="a")["suppressed"]


def test_routing_lark_message_resets_the_hop_count(loop_room):
    c = loop_room
    for i, sender in enumerate(["a", "b", "a"]):
        post(c, f"hop {i}", room="loop", sender=sender)
    post(c, "from lark", room="loop", sender="ou_123", sender_kind="lark")
    assert routed(post(c, "resumed", room="loop", sender="a")) == {"b": "all"}


def test_routing_hop_count_is_per_room(loop_room):
    c = loop_room
    invite(c, "general", "b", "all")
    for i, sender in enumerate(["a", "b", "a"]):
        post(c, f"hop {i}", room="loop", sender=sender)
    assert routed(post(c, "elsewhere", room="general", sender="a")) == {"b": "all"}


def test_routing_hop_limit_zero_mutes_agent_messages_only(client):
    make_room(client, "strict", settings={"hop_limit": 0})
    make_agent(client, "a")
    make_agent(client, "b")
    invite(client, "strict", "a", "all")
    invite(client, "strict", "b", "all")
    assert post(client, "@b hi", room="strict", sender="a")["deliveries"] == []
    assert routed(post(client, "hi", room="strict")) == {"a": "all", "b": "all"}


def test_routing_default_hop_limit_is_8(client):
    make_agent(client, "a")
    make_agent(client, "b")
    invite(client, "general", "a", "all")
    invite(client, "general", "b", "all")
    results = [post(client, f"hop {i}", sender="ab"[i % 2]) for i in range(9)]
    assert all(r["deliveries"] for r in results[:8])
    assert results[8]["deliveries"] == [] and results[8]["suppressed"]
