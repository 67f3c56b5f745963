"""The server's link to PostgreSQL cut (through a TCP proxy) and restored: while it is down
every request that needs the database answers a clean 503 and the background sweep logs one
line per failure, and once it is back the same server answers again, without a restart,
with everything it acknowledged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess
from tests.fault.helpers import every_page
from tests.fault.proxy import TcpProxy

pytestmark = pytest.mark.e2e


def test_postgresql_unreachable_answers_503_and_the_server_recovers_when_it_is_back(
    empty_postgres_db: str, make_server: Any, request: pytest.FixtureRequest
) -> None:
    url = sa.engine.make_url(empty_postgres_db)
    proxy = TcpProxy(url.port or 5432).start()
    request.addfinalizer(proxy.close)
    via_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    # A short grace makes the liveness sweep run (and fail) every 0.25 s while the link is cut.
    server: ServerProcess = make_server({"PAL_DB": via_proxy, "PAL_HEARTBEAT_GRACE": "1"})
    request.addfinalizer(server.stop)  # before the proxy closes under it
    http = httpx.Client(base_url=server.url, timeout=30)
    request.addfinalizer(http.close)

    def post(text: str) -> httpx.Response:
        return http.post("/api/messages", json={"room": "general", "sender": "a", "content": text})

    acked = [text for text in (f"before {i}" for i in range(5)) if post(text).status_code == 201]
    assert len(acked) == 5

    proxy.cut("all")
    answers = [post("while cut"), http.get("/api/messages", params={"room": "general"})]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"].startswith("the database cannot do this request now (")

    wait_until(lambda: "liveness sweep failed: " in server.log.read_text(), timeout=10)

    proxy.restore()
    assert post("after").status_code == 201
    stored = [m["content"] for m in every_page(http, "/api/messages", "messages", room="general")]
    assert stored == [*acked, "after"]
    assert "Traceback" not in server.log.read_text()  # one line per failure, saying why
    print(
        f"\n[fault] PostgreSQL link cut: {len(answers)} of {len(answers)} requests answered "
        f"503 ({answers[0].json()['error']!r}); the same server wrote again once it was back"
    )
