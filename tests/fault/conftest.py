"""The fault suite: real servers and daemons (the e2e fixtures), killed, cut off and starved
of disk on purpose. Each test states the guarantee it checks; docs/reliability.md lists them."""

from tests.e2e.conftest import (  # noqa: F401  (fixtures shared with the e2e tests)
    backend_env,
    empty_postgres_db,
    make_daemon,
    make_server,
    server,
)
