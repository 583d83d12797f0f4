"""schemathesis against each service's own OpenAPI schema, on the real stack: no 5xx, whatever the input."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import SERVICES

pytestmark = pytest.mark.e2e
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("service", SERVICES)
def test_no_input_makes_a_service_fail(stack, service):
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            stack.url(service, "/api/schema/"),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--request-timeout",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
