"""The bulkhead: a bounded number of calls in flight, the rest refused at once without the network."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience import testing
from resilience.exceptions import BulkheadFullError
from resilience.http import ServiceClient


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_calls_over_the_limit_are_rejected_at_once_without_touching_the_network(
    make_policy, upstream
):
    policy = make_policy(
        BULKHEAD={"MAX_CONCURRENT_CALLS": 3, "MAX_WAIT": 0.0}, TIMEOUT={"CONNECT": 0.5, "READ": 2.0}
    )
    client = ServiceClient("upstream")
    with ThreadPoolExecutor(max_workers=3) as pool:
        held = [pool.submit(client.get, "/hang") for _ in range(3)]
        wait_for(lambda: upstream.count("/hang") == 3)
        assert policy.bulkhead.available == 0
        assert (
            testing.metric("resilience_bulkhead_available_concurrent_calls", name="upstream") == 0
        )
        start = time.monotonic()
        with pytest.raises(BulkheadFullError):
            client.get("/ok")
        assert time.monotonic() - start < 0.05
        assert upstream.count("/ok") == 0
        upstream.release()
        assert [f.result().status_code for f in held] == [200, 200, 200]
    assert policy.bulkhead.available == 3
    assert testing.metric("resilience_bulkhead_calls_total", name="upstream", kind="rejected") == 1


def test_max_wait_lets_a_caller_wait_for_a_free_slot(make_policy):
    policy = make_policy(BULKHEAD={"MAX_CONCURRENT_CALLS": 1, "MAX_WAIT": 1.0})
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(policy.call, release.wait, idempotent=True, args=(5,))
        wait_for(lambda: policy.bulkhead.available == 0)
        threading.Timer(0.1, release.set).start()
        assert policy.call(lambda: "second", idempotent=True) == "second"
        assert first.result() is True


def test_max_wait_ends_with_bulkhead_full(make_policy):
    policy = make_policy(BULKHEAD={"MAX_CONCURRENT_CALLS": 1, "MAX_WAIT": 0.1})
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(policy.call, release.wait, idempotent=True, args=(5,))
        wait_for(lambda: policy.bulkhead.available == 0)
        start = time.monotonic()
        with pytest.raises(BulkheadFullError):
            policy.call(lambda: "never", idempotent=True)
        assert 0.09 <= time.monotonic() - start < 0.5
        release.set()


def test_the_wait_for_a_slot_never_outlasts_the_callers_deadline(make_policy):
    from resilience import deadline as deadlines

    policy = make_policy(BULKHEAD={"MAX_CONCURRENT_CALLS": 1, "MAX_WAIT": 1.0})
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(policy.call, release.wait, idempotent=True, args=(5,))
        wait_for(lambda: policy.bulkhead.available == 0)
        start = time.monotonic()
        with deadlines.scope(0.05), pytest.raises(BulkheadFullError):
            policy.call(lambda: "never", idempotent=True)
        assert time.monotonic() - start < 0.5
        release.set()
