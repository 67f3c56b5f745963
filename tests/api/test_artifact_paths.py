"""Artifact files stay in PAL_HOME/artifacts whatever id or name a request carries."""

from __future__ import annotations

import pytest

from pal.server import artifact_files

HOSTILE = [
    "../admin.token",
    "..%2Fadmin.token",
    "%2e%2e%2fadmin.token",
    "art_..%2f..%2fadmin.token",
    "art_x/../../admin.token",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "art_%00",
    "art_x%5C..%5C..%5Cadmin.token",
]


@pytest.fixture
def home(client):
    return client.app.state.settings.home


@pytest.mark.parametrize("artifact_id", HOSTILE)
def test_hostile_ids_read_nothing_outside_the_folder(client, home, artifact_id):
    home.mkdir(parents=True, exist_ok=True)
    (home / "admin.token").write_text("pal_admin_secret-secret")
    for url in (f"/artifacts/{artifact_id}", f"/api/artifacts/{artifact_id}"):
        r = client.get(url)
        assert r.status_code in (404, 405, 422), (url, r.status_code)
        assert "secret-secret" not in r.text and "root:" not in r.text


@pytest.mark.parametrize("title", ["../../evil", "/etc/passwd", "..\\..\\evil", "a/b/c"])
def test_titles_never_become_paths(client, title):
    r = client.post("/api/artifacts", params={"title": title}, content=b"<p>x</p>")
    assert r.status_code == 201, r.text
    artifact = r.json()["artifact"]
    folder = client.app.state.settings.artifacts_dir
    assert sorted(p.name for p in folder.iterdir()) == [artifact["id"]]
    got = client.get(f"/artifacts/{artifact['id']}")
    assert got.status_code == 200 and got.content == b"<p>x</p>"
    assert "/" not in got.headers["content-disposition"].split("filename=")[1].split(";")[0]


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", "", ".upload-\x00"])
def test_file_helpers_refuse_names_that_leave_the_folder(tmp_path, name):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    (tmp_path / "x").write_text("keep")
    with pytest.raises(ValueError):
        artifact_files.inside(folder, name)
    assert artifact_files.remove_file(folder, name) == 0
    assert (tmp_path / "x").read_text() == "keep"
