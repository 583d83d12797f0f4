"""``ENABLED: False``: the naive baseline, a plain call with a 30 s timeout and nothing else."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience import deadline as deadlines
from resilience.exceptions import UpstreamStatusError
from resilience.http import ServiceClient


def test_baseline_makes_one_plain_attempt(make_policy, upstream):
    make_policy(ENABLED=False, TIMEOUT={"CONNECT": 0.1, "READ": 0.1})
    upstream.script([503])
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").get("/script")
    assert upstream.count("/script") == 1
    # The policy's 0.1 s READ is not applied: the baseline waits (up to 30 s).
    assert ServiceClient("upstream").get("/delay/0.3").status_code == 200


def test_baseline_has_no_breaker_no_bulkhead_and_no_deadline_header(make_policy, upstream):
    policy = make_policy(ENABLED=False, BULKHEAD={"MAX_CONCURRENT_CALLS": 1})
    client = ServiceClient("upstream")
    for _ in range(20):
        with pytest.raises(UpstreamStatusError):
            client.get("/status/503")
    assert policy.breaker.current_state == "closed"
    assert deadlines.HEADER not in client.get("/echo").json()["headers"]
    started = threading.Barrier(4)

    def call(_):
        started.wait()
        return client.get("/delay/0.1").status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(call, range(4))) == [200] * 4


def test_baseline_waits_as_long_as_the_dependency_takes(make_policy, upstream):
    make_policy(ENABLED=False, DEADLINE=0.5, TIMEOUT={"CONNECT": 0.1, "READ": 0.2})
    start = time.monotonic()
    assert ServiceClient("upstream").get("/delay/1").status_code == 200
    assert time.monotonic() - start >= 1.0
