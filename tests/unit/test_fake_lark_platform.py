"""The fake Lark Open Platform checked against the real SDK's REST client (``lark-oapi``), and
the fake's own test controls. (The SDK's long-connection client runs in a child process:
tests/e2e/test_lark_sdk.py.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import os

import httpx
import pytest
from websockets.asyncio.client import connect

from pal.lark import frames
from tests.fakes.lark_platform import FakeLarkPlatform, ThreadedFake, eventually

SECRET = "sdk-secret"
# The SDK caches tenant tokens per app_id in a class-level cache: a fresh app id per test.
_app_ids = (f"cli_sdk_{os.getpid()}_{n}" for n in itertools.count())


@pytest.fixture
def threaded():
    with ThreadedFake() as threaded:
        yield threaded


def sdk_client(origin: str, app_id: str, secret: str = SECRET):
    import lark_oapi as lark

    return (
        lark.Client.builder()
        .app_id(app_id)
        .app_secret(secret)
        .domain(origin)
        .log_level(lark.LogLevel.ERROR)
        .build()
    )


def test_sdk_sends_replies_and_reacts_through_the_fake(threaded):
    from lark_oapi.api.im.v1 import (
        CreateMessageReactionRequest,
        CreateMessageReactionRequestBody,
        CreateMessageRequest,
        CreateMessageRequestBody,
        DeleteMessageReactionRequest,
        Emoji,
        ReplyMessageRequest,
        ReplyMessageRequestBody,
    )

    app_id = next(_app_ids)
    threaded.call(lambda fake: fake.add_app(app_id, SECRET))
    injected = threaded.call(lambda fake: fake.inject_message("hi", apps=[app_id]))
    client = sdk_client(threaded.origin, app_id)
    content = json.dumps({"text": "hello from the SDK"})

    async def calls():
        sent = await client.im.v1.message.acreate(
            CreateMessageRequest.builder()
            .receive_id_type("chat_id")
            .request_body(
                CreateMessageRequestBody.builder()
                .receive_id(injected["chat_id"])
                .msg_type("text")
                .content(content)
                .uuid("u-1")
                .build()
            )
            .build()
        )
        replied = await client.im.v1.message.areply(
            ReplyMessageRequest.builder()
            .message_id(injected["message_id"])
            .request_body(
                ReplyMessageRequestBody.builder()
                .msg_type("text")
                .content(content)
                .reply_in_thread(True)
                .build()
            )
            .build()
        )
        reaction = await client.im.v1.message_reaction.acreate(
            CreateMessageReactionRequest.builder()
            .message_id(injected["message_id"])
            .request_body(
                CreateMessageReactionRequestBody.builder()
                .reaction_type(Emoji.builder().emoji_type("Typing").build())
                .build()
            )
            .build()
        )
        deleted = await client.im.v1.message_reaction.adelete(
            DeleteMessageReactionRequest.builder()
            .message_id(injected["message_id"])
            .reaction_id(reaction.data.reaction_id)
            .build()
        )
        return sent, replied, reaction, deleted

    sent, replied, reaction, deleted = asyncio.run(calls())
    assert sent.success(), sent.msg
    assert sent.data.chat_id == injected["chat_id"] and sent.data.message_id.startswith("om_")
    assert sent.data.sender.sender_type == "app" and sent.data.body.content == content
    assert replied.success() and replied.data.parent_id == injected["message_id"]
    assert replied.data.thread_id.startswith("omt_")
    assert reaction.success() and reaction.data.reaction_type.emoji_type == "Typing"
    assert reaction.data.operator.operator_type == "app"
    assert deleted.success() and deleted.data.reaction_id == reaction.data.reaction_id
    fake = threaded.fake
    assert [m["reply_to"] if "reply_to" in m else m["uuid"] for m in fake.messages] == [
        "u-1",
        injected["message_id"],
    ]
    assert [entry[0] for entry in fake.reaction_log] == ["add", "delete"]
    # The SDK fetched one tenant token (its POST has no Content-Type) and used it for all.
    assert fake.requests.count(("POST", "/open-apis/auth/v3/tenant_access_token/internal")) == 1


def test_sdk_reads_the_tenant_token_and_larks_errors(threaded):
    from lark_oapi.api.auth.v3 import (
        InternalTenantAccessTokenRequest,
        InternalTenantAccessTokenRequestBody,
    )
    from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody

    app_id = next(_app_ids)
    threaded.call(lambda fake: fake.add_app(app_id, SECRET))
    client = sdk_client(threaded.origin, app_id)

    async def calls():
        token = await client.auth.v3.tenant_access_token.ainternal(
            InternalTenantAccessTokenRequest.builder()
            .request_body(
                InternalTenantAccessTokenRequestBody.builder()
                .app_id(app_id)
                .app_secret(SECRET)
                .build()
            )
            .build()
        )
        outside = await client.im.v1.message.acreate(
            CreateMessageRequest.builder()
            .receive_id_type("chat_id")
            .request_body(
                CreateMessageRequestBody.builder()
                .receive_id("oc_not_a_member")
                .msg_type("text")
                .content(json.dumps({"text": "x"}))
                .build()
            )
            .build()
        )
        return token, outside

    token, outside = asyncio.run(calls())
    body = json.loads(token.raw.content)  # top level, no "data" (lark.md §3.1)
    assert body["code"] == 0 and body["tenant_access_token"].startswith("t-")
    assert body["expire"] == 7200
    assert (outside.code, outside.msg) == (230002, "Bot/User can NOT be out of the chat.")
    assert outside.raw.status_code == 400


def test_sdk_token_fetch_with_a_wrong_secret_fails_with_10014(threaded):
    from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody
    from lark_oapi.core.exception import ObtainAccessTokenException

    app_id = next(_app_ids)
    threaded.call(lambda fake: fake.add_app(app_id, SECRET))
    client = sdk_client(threaded.origin, app_id, secret="wrong")
    request = (
        CreateMessageRequest.builder()
        .receive_id_type("chat_id")
        .request_body(
            CreateMessageRequestBody.builder()
            .receive_id("oc_x")
            .msg_type("text")
            .content("{}")
            .build()
        )
        .build()
    )
    with pytest.raises(ObtainAccessTokenException) as caught:
        asyncio.run(client.im.v1.message.acreate(request))
    assert (caught.value.code, caught.value.msg) == (10014, "app secret invalid")


# -- the fake's own controls ---------------------------------------------------------------


@pytest.fixture
async def fake():
    async with FakeLarkPlatform(repush_after=0.2) as fake:
        fake.add_app("cli_a", SECRET)
        yield fake


async def discover(fake: FakeLarkPlatform) -> dict:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            fake.origin + "/callback/ws/endpoint", json={"AppID": "cli_a", "AppSecret": SECRET}
        )
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    return r.json()


async def test_discovery_gives_a_url_and_all_four_client_config_fields(fake):
    answer = await discover(fake)
    assert answer["code"] == 0
    assert set(answer["data"]["ClientConfig"]) == {
        "ReconnectCount",
        "ReconnectInterval",
        "ReconnectNonce",
        "PingInterval",
    }
    url = answer["data"]["URL"]
    assert url.startswith(f"ws://127.0.0.1:{fake.port}/ws?device_id=") and "service_id=" in url


async def test_a_discovered_url_works_once(fake):
    url = (await discover(fake))["data"]["URL"]
    async with connect(url, proxy=None):
        pass
    with pytest.raises(Exception) as caught:
        async with connect(url, proxy=None):
            pass
    assert caught.value.response.headers["handshake-status"] == "403"


async def test_silent_connection_answers_nothing_not_even_websocket_pings(fake):
    url = (await discover(fake))["data"]["URL"]
    async with connect(url, proxy=None, ping_interval=None, close_timeout=0.1) as ws:
        await eventually(lambda: fake.live_connections("cli_a"))
        waiter = await ws.ping()
        await asyncio.wait_for(waiter, 2)  # answered while the connection is healthy
        fake.go_silent("cli_a")
        waiter = await ws.ping()
        await ws.send(frames.encode(frames.ping(1)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), 0.5)
        assert fake.live_connections("cli_a")[0].pings == 0


async def test_unacked_event_is_pushed_again_with_the_same_message(fake):
    url = (await discover(fake))["data"]["URL"]
    async with connect(url, proxy=None, ping_interval=None) as ws:
        await eventually(lambda: fake.live_connections("cli_a"))
        injected = await fake.inject_message("are you there?", apps=["cli_a"])
        first = frames.decode(await ws.recv())
        again = frames.decode(await asyncio.wait_for(ws.recv(), 2))  # never acked: re-pushed
        await ws.send(frames.encode(frames.ack(again)))
        await eventually(lambda: fake.acks)
    assert first.header("message_id") != again.header("message_id")  # a new transport message
    assert json.loads(first.payload) == json.loads(again.payload) == injected["events"]["cli_a"]
    assert fake.pushed[again.header("message_id")].acked_at is not None
