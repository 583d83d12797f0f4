"""Fallbacks: chosen by the caller, handed the exception that ended the call."""

import pytest

from resilience import testing
from resilience.exceptions import BusinessError, CircuitOpenError, UpstreamStatusError
from resilience.http import ServiceClient


def test_the_fallback_receives_the_exception_that_ended_the_call(make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 2})
    received = []

    def fallback(exc):
        received.append(exc)
        return "cached"

    assert ServiceClient("upstream").get("/status/503", fallback=fallback) == "cached"
    [exc] = received
    assert isinstance(exc, UpstreamStatusError) and exc.status_code == 503
    assert (
        testing.metric("resilience_fallback_calls_total", name="upstream", reason="upstream_status")
        == 1
    )


def test_fallbacks_chain_from_cache_to_a_default(make_policy, upstream):
    policy = make_policy()
    policy.breaker.force_open()
    cache = {}

    def from_cache(exc):
        if "show-1" in cache:
            return cache["show-1"]
        return popular(exc)

    def popular(exc):
        return {"source": "popular", "because": type(exc).__name__}

    assert ServiceClient("upstream").get("/ok", fallback=from_cache) == {
        "source": "popular",
        "because": "CircuitOpenError",
    }
    cache["show-1"] = {"source": "cache"}
    assert ServiceClient("upstream").get("/ok", fallback=from_cache) == {"source": "cache"}


def test_a_business_error_never_falls_back(make_policy):
    policy = make_policy()

    def declined():
        raise BusinessError("declined")

    with pytest.raises(BusinessError):
        policy.call(declined, fallback=lambda exc: "faked success", idempotent=True)


def test_without_a_fallback_the_error_propagates(make_policy):
    policy = make_policy()
    policy.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        policy.call(lambda: "never", idempotent=True)
