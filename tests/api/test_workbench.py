"""The workbench's server side: GET / (the page for browsers, the JSON index for API
clients), its static files, unread counts per room, and a room's topics and newest id."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import pal
from pal.config import load_settings
from pal.server import web
from pal.store import messages as messages_store
from tests.helpers import make_room, post

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


# --- GET / and static files ---------------------------------------------------------------


def test_a_browser_gets_the_workbench_page(client):
    r = client.get("/", headers=HTML)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert "<html" in r.text.lower()


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
def test_an_api_client_gets_the_json_index(client, accept):
    r = client.get("/", headers={"Accept": accept} if accept else {})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "name": "pal",
        "version": pal.__version__,
        "health": "/health",
        "openapi": "/openapi.json",
        "docs": "/docs",
    }


@pytest.fixture
def site(tmp_path: Path) -> TestClient:
    """The workbench router alone, over a template and static files made here."""
    templates, static = tmp_path / "templates", tmp_path / "static"
    (static / "js").mkdir(parents=True)
    templates.mkdir()
    (templates / "workbench.html").write_text(
        "<html>{{ version }} {{ static }} {{ asset('js/app.js') }} {{ '<b>' }}</html>"
    )
    (static / "js" / "app.js").write_text("export const x = 1;\n")
    (static / "app.css").write_text("body { margin: 0 }\n")
    app = FastAPI()
    app.state.settings = load_settings({"PAL_HOME": str(tmp_path / "home")})
    app.include_router(web.router)
    web.install(app, templates_dir=templates, static_dir=static)
    return TestClient(app)


def test_the_page_gets_the_version_and_the_static_prefix_escaped(site):
    r = site.get("/", headers=HTML)
    version = pal.__version__
    assert r.text == f"<html>{version} /static /static/js/app.js?v={version} &lt;b&gt;</html>"


def test_javascript_is_served_as_text_javascript_and_revalidated(site):
    r = site.get("/static/js/app.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.text == "export const x = 1;\n"
    again = site.get("/static/js/app.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_css_is_served_as_css(site):
    r = site.get("/static/app.css")
    assert r.headers["content-type"].startswith("text/css")


def test_a_missing_static_file_is_404(site):
    assert site.get("/static/js/nope.js").status_code == 404
    assert site.get("/static/../templates/workbench.html").status_code == 404


def test_the_real_static_files_are_served(client):
    files = sorted((web.STATIC / "js").glob("*.js"))
    assert files, f"no JavaScript under {web.STATIC / 'js'}"
    r = client.get(f"/static/js/{files[0].name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"


# --- unread counts --------------------------------------------------------------------------


def test_unread_counts_the_messages_after_the_last_one_read(client):
    ops = make_room(client, "ops")
    ids = [post(client, f"m{i}")["message"]["id"] for i in range(3)]
    post(client, "elsewhere", room="ops")
    r = client.get(
        "/api/workbench/unread",
        params=[("read", f"general:{ids[0]}"), ("read", f"{ops['id']}:0"), ("read", "nope:0")],
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"unread": {"general": 2, ops["id"]: 1}}


def test_unread_with_nothing_asked_is_empty(client):
    assert client.get("/api/workbench/unread").json() == {"unread": {}}


def test_unread_is_zero_when_everything_was_read(client):
    last = post(client, "m")["message"]["id"]
    r = client.get("/api/workbench/unread", params={"read": f"general:{last}"})
    assert r.json() == {"unread": {"general": 0}}


def test_unread_counts_stop_at_the_cap(client, database):
    for i in range(4):
        post(client, f"m{i}")
    counts = database.read_sync(messages_store.unread_counts, {"general": 0}, 3)
    assert counts == {"general": 3}
    assert messages_store.UNREAD_CAP == 1000


@pytest.mark.parametrize(
    "value",
    [
        "general",
        "general:",
        ":5",
        "general:x",
        "general:-1",
        "general:1.5",
        "a b:1",
        "g:" + "9" * 20,
    ],
)
def test_a_bad_read_value_is_422(client, value):
    r = client.get("/api/workbench/unread", params={"read": value})
    assert r.status_code == 422, r.text
    assert "<room id or name>:<last read message id>" in r.json()["error"]


def test_too_many_read_values_is_422(client):
    r = client.get("/api/workbench/unread", params=[("read", f"r{i}:0") for i in range(1001)])
    assert r.status_code == 422
    assert "read" in r.json()["error"]


# --- a room's topics and newest message -----------------------------------------------------


def test_room_topics_are_listed(client):
    r = client.post("/api/rooms/general/topics", json={"title": "Release", "created_by": "al"})
    assert r.status_code == 201, r.text
    topic = r.json()["topic"]
    r = client.get("/api/rooms/general/topics")
    assert r.status_code == 200
    listed = r.json()
    assert listed["room"] == "general"
    assert [(t["id"], t["title"], t["room_id"]) for t in listed["topics"]] == [
        (topic["id"], "Release", topic["room_id"])
    ]
    assert {"created_at", "created_by"} <= set(listed["topics"][0])


def test_topics_of_an_unknown_room_is_404(client):
    r = client.get("/api/rooms/nope/topics")
    assert r.status_code == 404
    assert r.json()["error"] == "room 'nope' not found"


def test_a_room_says_its_newest_message_id(client):
    assert client.get("/api/rooms/general").json()["room"]["last_message_id"] is None
    last = [post(client, f"m{i}")["message"]["id"] for i in range(2)][-1]
    post(client, "elsewhere", room=make_room(client, "ops")["name"])
    assert client.get("/api/rooms/general").json()["room"]["last_message_id"] == last
