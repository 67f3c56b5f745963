def test_health_reports_ok_and_backend(client, db_url):
    body = client.get("/health").json()
    assert body["ok"] is True
    assert body["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")


def test_fresh_install_has_general_room(client):
    names = [r["name"] for r in client.get("/api/rooms").json()["rooms"]]
    assert names == ["general"]
