"""lark.json: every validation rule has a message naming the file, the bot and the field;
secrets never appear in a message; saving is atomic and owner-only."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pal.lark.config import (
    BotConfig,
    LarkConfig,
    LarkConfigError,
    bind_bot,
    check_domain,
    load_config,
    redact,
    save_config,
    unbind_agent,
    validate_config,
)

SECRET = "s3cr3t-VALUE-never-shown"


def bot(app_id="cli_a", agent="codex", **fields):
    return {"app_id": app_id, "app_secret": SECRET, "agent": agent, **fields}


def refused(tmp_path, content):
    path = tmp_path / "lark.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(LarkConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert SECRET not in message
    assert caught.value.status == 422
    return message.replace(str(path), "FILE")


def test_lark_config_missing_file_means_no_bots(tmp_path):
    assert load_config(tmp_path / "absent.json") == LarkConfig(bots=[])


def test_lark_config_loads_a_valid_file_with_defaults(tmp_path):
    path = tmp_path / "lark.json"
    path.write_text(json.dumps({"bots": [bot(), bot("cli_b", agent=None, label="B")]}))
    config = load_config(path)
    assert [b.app_id for b in config.bots] == ["cli_a", "cli_b"]
    assert config.bots[0].domain == "https://open.feishu.cn"
    assert config.bots[0].label == "" and config.bots[0].open_id is None
    assert config.bot_of_agent("codex") == config.bots[0]
    assert config.bot("cli_b").label == "B" and config.bot("nope") is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", 'FILE is empty; write {"bots": []} or delete the file'),
        ('{"bots": [', "FILE is not valid JSON (Expecting value at line 1 column 11)"),
        ("[1]", 'FILE: must be a JSON object such as {"bots": [...]}, not list'),
        ({"bot": []}, "FILE is invalid: bot: is not a known field (check its spelling)"),
        ({"bots": {}}, "FILE is invalid: bots: input should be a valid list"),
        ({"bots": ["x"]}, "FILE is invalid: bots[0]: must be a JSON object"),
        (
            {"bots": [{"app_secret": SECRET}]},
            "FILE is invalid: bots[0]: app_id: is required",
        ),
        (
            {"bots": [{"app_id": "cli_a"}]},
            "FILE is invalid: bots[0] (app_id cli_a): app_secret: is required",
        ),
        (
            {"bots": [bot(app_secret="two words")]},
            "FILE is invalid: bots[0] (app_id cli_a): app_secret: has characters that are not "
            "allowed (letters, digits, '_', '-', '.')",
        ),
        (
            {"bots": [bot(app_id="cli a")]},
            "FILE is invalid: bots[0]: app_id: has characters that are not allowed "
            "(letters, digits, '_', '-', '.')",
        ),
        (
            {"bots": [bot(agent="no spaces")]},
            "FILE is invalid: bots[0] (app_id cli_a): agent: has characters that are not "
            "allowed (letters, digits, '_', '-', '.')",
        ),
        (
            {"bots": [bot(secret=SECRET)]},
            "FILE is invalid: bots[0] (app_id cli_a): secret: is not a known field "
            "(check its spelling)",
        ),
        (
            {"bots": [bot(), bot()]},
            "FILE is invalid: bots[1]: app_id cli_a is also bots[0]; keep one entry per Lark app",
        ),
        (
            {"bots": [bot(), bot("cli_b")]},
            "FILE is invalid: bots[1] (app_id cli_b): agent codex is already bound to bot "
            "cli_a; an agent may be bound to one bot only (set one of them to null)",
        ),
    ],
)
def test_lark_config_refuses_with_a_message_that_says_what_to_fix(tmp_path, content, expected):
    assert refused(tmp_path, content) == expected


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("ftp://open.feishu.cn", "is not an http(s) origin"),
        ("open.feishu.cn", "is not an http(s) origin"),
        ("https://open.feishu.cn/open-apis", "must not have a path, query or fragment"),
        ("https://open.feishu.cn?x=1", "must not have a path, query or fragment"),
        ("https://user:pw@open.feishu.cn", "must not hold credentials"),
        ("http://open.feishu.cn", "uses http:// for a host that is not loopback"),
        ("http://10.0.0.1:8080", "uses http:// for a host that is not loopback"),
        ("https://open.feishu.cn:99999", "is not an http(s) origin"),
    ],
)
def test_lark_config_domain_must_be_an_origin(tmp_path, domain, problem):
    message = refused(tmp_path, {"bots": [bot(domain=domain)]})
    assert message.startswith(f"FILE is invalid: bots[0] (app_id cli_a): domain: {problem}: ")
    assert "https://open.feishu.cn or https://open.larksuite.com" in message


@pytest.mark.parametrize(
    ("domain", "origin"),
    [
        ("https://open.larksuite.com/", "https://open.larksuite.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_lark_config_domain_accepts_origins_and_loopback_http(domain, origin):
    assert check_domain(domain) == origin


def test_lark_config_save_is_owner_only_atomic_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "lark.json"
    config = validate_config({"bots": [bot(label="Main", open_id="ou_1")]})
    save_config(path, config)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_config(path) == config
    assert [p.name for p in path.parent.iterdir()] == ["lark.json"]  # no temporary file left
    os.chmod(path, 0o644)
    save_config(path, LarkConfig())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"bots": []}


def test_lark_config_save_refuses_an_invalid_configuration_and_keeps_the_file(tmp_path):
    path = tmp_path / "lark.json"
    path.write_text("keep me")
    twice = LarkConfig(bots=[BotConfig(**bot()), BotConfig(**bot("cli_b"))])
    with pytest.raises(LarkConfigError, match="agent codex is already bound to bot cli_a"):
        save_config(path, twice)
    assert path.read_text() == "keep me"


def test_lark_config_redact_hides_every_secret():
    config = validate_config({"bots": [bot(), bot("cli_b", agent=None, app_secret="short")]})
    shown = redact(config)
    assert SECRET not in json.dumps(shown) and "short" not in json.dumps(shown)
    assert shown["bots"][0]["app_secret"] == "s3c…(redacted)"
    assert shown["bots"][1]["app_secret"] == "…(redacted)"
    assert shown["bots"][0]["app_id"] == "cli_a"


def test_lark_config_bind_adds_a_bot_and_refuses_a_second_binding_without_rebind():
    config = validate_config({"bots": [bot("cli_old")]})
    new = BotConfig(**bot("cli_new"))
    with pytest.raises(LarkConfigError) as caught:
        bind_bot(config, new)
    assert caught.value.message == (
        "agent codex is already bound to Lark bot cli_old; add --rebind-lark to move it to "
        "cli_new, or --unbind-lark first"
    )
    moved = bind_bot(config, new, rebind=True)
    assert [(b.app_id, b.agent) for b in moved.bots] == [("cli_old", None), ("cli_new", "codex")]
    assert moved.bot("cli_old").app_secret == SECRET  # the credential stays


def test_lark_config_bind_refuses_taking_a_bot_from_another_agent_without_rebind():
    config = validate_config({"bots": [bot("cli_a", agent="other", label="Kept")]})
    again = BotConfig(**bot("cli_a", agent="codex", app_secret="new-secret-value"))
    with pytest.raises(LarkConfigError, match="Lark bot cli_a is bound to agent other"):
        bind_bot(config, again)
    [taken] = bind_bot(config, again, rebind=True).bots
    assert (taken.agent, taken.app_secret, taken.label) == ("codex", "new-secret-value", "Kept")


def test_lark_config_bind_the_same_agent_again_updates_the_entry():
    config = validate_config({"bots": [bot(label="Old")]})
    [updated] = bind_bot(config, BotConfig(**bot(label="New", open_id="ou_9"))).bots
    assert (updated.label, updated.open_id, updated.agent) == ("New", "ou_9", "codex")


def test_lark_config_unbind_keeps_the_credential():
    config = validate_config({"bots": [bot()]})
    new, was = unbind_agent(config, "codex")
    assert was.app_id == "cli_a"
    assert [(b.app_id, b.agent, b.app_secret) for b in new.bots] == [("cli_a", None, SECRET)]
    with pytest.raises(LarkConfigError, match="agent codex is not bound to a Lark bot"):
        unbind_agent(new, "codex")
