import os
from pathlib import Path

import pytest

from resilience import storage, testing
from tests.redis_server import RedisServer
from tests.upstream import Upstream

REDIS_URL = os.environ.get("REDIS_URL")


def pytest_configure(config):
    """The SQLite test database is a file under var/db/ (see booking/settings/test.py)."""
    from django.conf import settings

    (Path(settings.VAR_DIR) / "db").mkdir(parents=True, exist_ok=True)


def on_postgresql() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


# marker: (whether what it needs is there, how to run them)
NEEDS = {
    "redis": (lambda: bool(REDIS_URL), "set REDIS_URL=redis://127.0.0.1:6379/15"),
    "postgresql": (
        on_postgresql,
        "set DATABASE_URL=postgres://postgres@127.0.0.1:5432/booking",
    ),
}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``redis`` run when REDIS_URL names a server, those marked ``postgresql``
    when DATABASE_URL names a PostgreSQL database (CI's second pass sets both)."""
    config._deselected_for = {}
    for marker, (available, _) in NEEDS.items():
        if available():
            continue
        deselected = [item for item in items if item.get_closest_marker(marker)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
            config._deselected_for[marker] = len(deselected)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for marker, count in getattr(config, "_deselected_for", {}).items():
        terminalreporter.write_line(
            f"{count} tests that need {marker} were not run: {NEEDS[marker][1]} "
            "to run them (.ci/run does)."
        )


@pytest.fixture(scope="session")
def upstream_server():
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    yield upstream_server
    upstream_server.release()


@pytest.fixture(autouse=True)
def resilience_test_mode():
    """Every test: fresh policy state, and virtual time so that no backoff really sleeps."""
    testing.reset()
    testing.reset_metrics()
    with testing.virtual_time() as clock:
        yield clock
    testing.reset()


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own, on a free port, gone after the test."""
    server = RedisServer(tmp_path).start()
    yield server
    storage.close_links(server.url)
    server.kill()
