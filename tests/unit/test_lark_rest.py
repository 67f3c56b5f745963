"""LarkRest against the fake Open Platform: the tenant token cache, invalid-token retry,
errors without secrets, and the message and reaction calls."""

from __future__ import annotations

import json

import httpx
import pytest

from pal.lark.rest import TOKEN_PATH, LarkApiError, LarkRest, LarkUnreachable
from tests.e2e.conftest import free_port
from tests.fakes.lark_platform import FakeLarkPlatform

SECRET = "s3cr3t-VALUE-never-shown"


@pytest.fixture
async def fake():
    async with FakeLarkPlatform() as fake:
        fake.add_app("cli_a", SECRET, name="Codex bot")
        yield fake


@pytest.fixture
async def rest(fake):
    client = LarkRest(fake.origin, "cli_a", SECRET)
    yield client
    await client.aclose()


def token_fetches(fake: FakeLarkPlatform) -> int:
    return fake.requests.count(("POST", TOKEN_PATH))


async def test_bot_info_gives_the_bots_open_id_and_name(fake, rest):
    assert await rest.bot_info() == {"open_id": fake.apps["cli_a"].open_id, "app_name": "Codex bot"}


async def test_token_is_fetched_once_and_reused(fake, rest):
    await rest.bot_info()
    await rest.bot_info()
    assert token_fetches(fake) == 1


async def test_token_is_refreshed_before_it_expires(fake):
    fake.token_ttl = 60
    now = [1000.0]
    rest = LarkRest(fake.origin, "cli_a", SECRET, clock=lambda: now[0])
    try:
        await rest.bot_info()
        now[0] += 29  # a 60 s token is renewed at half its life
        await rest.bot_info()
        assert token_fetches(fake) == 1
        now[0] += 2
        await rest.bot_info()
        assert token_fetches(fake) == 2
    finally:
        await rest.aclose()


async def test_invalid_token_is_refreshed_once_and_the_call_retried(fake, rest):
    await rest.bot_info()
    fake.expire_tokens()  # Lark answers 99991663 to the cached token
    assert (await rest.bot_info())["open_id"] == fake.apps["cli_a"].open_id
    assert token_fetches(fake) == 2


async def test_a_token_refused_again_after_the_refresh_is_an_error_not_a_loop(fake, rest):
    fake.token_ttl = 0  # every token is expired at once
    with pytest.raises(LarkApiError) as caught:
        await rest.bot_info()
    assert caught.value.code == 99991663
    assert token_fetches(fake) == 2


async def test_wrong_secret_is_10014_and_no_message_holds_the_secret(fake):
    rest = LarkRest(fake.origin, "cli_a", "wrong-" + SECRET)
    try:
        with pytest.raises(LarkApiError) as caught:
            await rest.bot_info()
    finally:
        await rest.aclose()
    exc = caught.value
    assert (exc.code, exc.msg, exc.status) == (10014, "app secret invalid", 400)
    assert str(exc) == "Lark error 10014: app secret invalid (HTTP 400)"
    assert SECRET not in repr(exc) and SECRET not in str(exc.args)


async def test_unreachable_domain_is_lark_unreachable():
    rest = LarkRest(f"http://127.0.0.1:{free_port()}", "cli_a", SECRET)
    try:
        with pytest.raises(LarkUnreachable, match="ConnectError") as caught:
            await rest.bot_info()
    finally:
        await rest.aclose()
    assert SECRET not in str(caught.value)


async def test_an_answer_that_is_not_larks_json_is_lark_unreachable():
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway"))
    )
    rest = LarkRest("https://open.feishu.cn", "cli_a", SECRET, http=http)
    with pytest.raises(LarkUnreachable, match="HTTP 502 without Lark's JSON"):
        await rest.bot_info()
    await http.aclose()


async def test_send_to_a_chat_returns_larks_message(fake, rest):
    injected = await fake.inject_message("hi", apps=["cli_a"], chat_type="group", chat_id="oc_g")
    message = await rest.send("oc_g", "chat_id", "héllo <b>")
    assert message["chat_id"] == "oc_g" and message["message_id"].startswith("om_")
    assert message["sender"] == {
        "id": "cli_a",
        "id_type": "app_id",
        "sender_type": "app",
        "tenant_key": "tenant_fake",
    }
    assert json.loads(message["body"]["content"]) == {"text": "héllo <b>"}
    [stored] = fake.messages
    assert (stored["receive_id_type"], stored["msg_type"]) == ("chat_id", "text")
    assert injected["chat_id"] == "oc_g"


async def test_send_with_the_same_uuid_sends_once(fake, rest):
    await fake.inject_message("hi", apps=["cli_a"], chat_id="oc_g")
    first = await rest.send("oc_g", "chat_id", "once", uuid="u-1")
    again = await rest.send("oc_g", "chat_id", "once", uuid="u-1")
    assert first["message_id"] == again["message_id"] and len(fake.messages) == 1


async def test_send_to_a_chat_without_the_bot_is_230002(rest):
    with pytest.raises(LarkApiError) as caught:
        await rest.send("oc_elsewhere", "chat_id", "hi")
    assert (caught.value.code, caught.value.status) == (230002, 400)
    assert caught.value.msg == "Bot/User can NOT be out of the chat."


async def test_send_to_a_user_by_open_id(fake, rest):
    message = await rest.send(fake.user("Bob").open_id("cli_a"), "open_id", "hi Bob")
    assert message["chat_id"].startswith("oc_")


async def test_send_refuses_an_unknown_receive_id_type_before_calling_lark(fake, rest):
    with pytest.raises(ValueError, match="receive_id_type must be one of chat_id, open_id"):
        await rest.send("x", "phone", "hi")
    assert fake.messages == []


async def test_fake_refuses_a_bad_receive_id_type_and_content_like_lark(fake, rest):
    token = await rest.token()
    async with httpx.AsyncClient(base_url=fake.origin) as http:
        auth = {"Authorization": f"Bearer {token}"}
        body = {"receive_id": "oc_g", "msg_type": "text", "content": json.dumps({"text": "x"})}
        messages = "/open-apis/im/v1/messages"
        r = await http.post(messages, params={"receive_id_type": "phone"}, json=body, headers=auth)
        assert r.status_code == 400 and r.json()["code"] == 230001
        body["content"] = {"text": "not a string"}
        r = await http.post(
            messages, params={"receive_id_type": "chat_id"}, json=body, headers=auth
        )
        assert r.status_code == 400 and "content must be a JSON string" in r.json()["msg"]
        r = await http.get("/open-apis/bot/v3/info")
        assert r.json() == {"code": 99991663, "msg": "Invalid access token for authorization."}


async def test_reply_in_thread_sets_root_parent_and_thread(fake, rest):
    injected = await fake.inject_message("question", apps=["cli_a"])
    reply = await rest.reply(injected["message_id"], "answer", in_thread=True)
    assert reply["parent_id"] == reply["root_id"] == injected["message_id"]
    assert reply["thread_id"].startswith("omt_") and reply["chat_id"] == injected["chat_id"]
    plain = await rest.reply(injected["message_id"], "again")
    assert plain["thread_id"] == "" and plain["parent_id"] == injected["message_id"]
    assert [m["reply_to"] for m in fake.messages] == [injected["message_id"]] * 2


async def test_reaction_is_added_then_removed(fake, rest):
    injected = await fake.inject_message("work on this", apps=["cli_a"])
    message_id = injected["message_id"]
    reaction_id = await rest.add_reaction(message_id, "Typing")
    assert list(fake.reactions[message_id]) == [reaction_id]
    await rest.delete_reaction(message_id, reaction_id)
    assert fake.reactions[message_id] == {}
    assert fake.reaction_log == [
        ("add", message_id, "Typing", "cli_a"),
        ("delete", message_id, "Typing", "cli_a"),
    ]
    with pytest.raises(LarkApiError) as caught:
        await rest.delete_reaction(message_id, reaction_id)
    assert caught.value.code == 231003


async def test_ids_with_a_slash_are_refused(rest):
    with pytest.raises(ValueError, match="not a Lark id"):
        await rest.add_reaction("om_1/../x", "OK")
