"""``/livez/`` (liveness) and ``/health/`` (readiness): only readiness asks the database."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.test_chaos import AUTH, chaos, put  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[1]
# Run in a process of its own whose database cannot be reached: nothing listens on port 1.
PROBE = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="localhost")
print(json.dumps({path: client.get(path).status_code for path in ("/livez/", "/health/")}))
"""


@pytest.mark.parametrize("service", ["orders", "gateway"])
def test_livez_answers_while_the_database_is_unreachable_and_health_does_not(service, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": f"booking.settings.{service}",
        "DATABASE_URL": "postgres://booking:nothing@127.0.0.1:1/orders",
        "DB_POOL_TIMEOUT": "1",
        "BOOKING_VAR_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"/livez/": 200, "/health/": 503}


@pytest.mark.django_db
def test_a_fault_on_every_request_spares_livez(client, chaos):  # noqa: F811
    put(client, {"error_rate": 1.0, "error_status": 503})
    assert client.get("/health/").status_code == 503
    response = client.get("/livez/")
    assert (response.status_code, response.content) == (200, b"ok\n")
