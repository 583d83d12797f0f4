"""The real stack for end-to-end tests (``workshop.scenarios.stack.RunningStack``): gunicorn
processes on free 127.0.0.1 ports, supervised, in a temporary directory; stopped at the end of
the module even when a test fails.

On CI's PostgreSQL + Redis pass (``DATABASE_URL`` is PostgreSQL, ``REDIS_URL`` set), each
service gets its own PostgreSQL database and the breakers and the gateway cache use Redis.
"""

import pytest

from workshop.scenarios.stack import ROOT, SERVICES, RunningStack

__all__ = ["ROOT", "SERVICES", "RunningStack"]


@pytest.fixture(scope="module")  # one stack at a time: two on 2 cores skew latency bounds
def stack(tmp_path_factory):
    with RunningStack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(autouse=True)
def resilience_test_mode():
    """End-to-end tests run in real time against real processes: no virtual clock here."""
    yield
