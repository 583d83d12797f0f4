"""Retry: only transient failures, only when safe, within the deadline and the retry budget."""

import random

import pytest

from resilience import conf, testing
from resilience.exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceededError,
    UpstreamConnectionError,
    UpstreamStatusError,
)
from resilience.http import ServiceClient
from resilience.retry import backoff, parse_retry_after
from tests.ports import closed_port_url


def test_a_transient_status_is_retried_until_it_succeeds(make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 3})
    upstream.script([503, 502])
    assert ServiceClient("upstream").get("/script").status_code == 200
    assert upstream.count("/script") == 3
    assert (
        testing.metric(
            "resilience_retry_calls_total", name="upstream", kind="successful_with_retry"
        )
        == 1
    )


def test_attempts_stop_at_max_attempts(make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 3})
    with pytest.raises(UpstreamStatusError) as info:
        ServiceClient("upstream").get("/status/503")
    assert info.value.status_code == 503
    assert upstream.count("/status") == 3


def test_a_4xx_is_never_retried_and_is_returned(make_policy, upstream):
    make_policy()
    response = ServiceClient("upstream").get("/status/409")
    assert response.status_code == 409
    assert upstream.count("/status") == 1


def test_a_500_counts_as_failure_but_is_not_retried(make_policy, upstream):
    make_policy()
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").get("/status/500")
    assert upstream.count("/status") == 1


def test_connection_refused_is_retried(make_policy, settings):
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 3})
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": closed_port_url()}
    with pytest.raises(UpstreamConnectionError):
        ServiceClient("upstream").get("/ok")
    assert testing.metric("resilience_retry_attempts_total", name=policy.name) == 2


def test_a_post_without_idempotency_key_is_tried_once(make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 3})
    upstream.script([503, 503])
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").post("/script", json={"amount": 10})
    assert upstream.count("/script") == 1


def test_a_post_with_idempotency_key_is_retried_with_the_same_key(make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 3})
    upstream.script([503, 504])
    response = ServiceClient("upstream").post(
        "/script", json={"amount": 10}, idempotency_key="order-7"
    )
    assert response.status_code == 200
    keys = [r["headers"].get("Idempotency-Key") for r in upstream.requests]
    assert keys == ["order-7", "order-7", "order-7"]
    assert {r["body"] for r in upstream.requests} == {b'{"amount": 10}'}


def test_retry_after_is_honoured(make_policy, upstream, resilience_test_mode):
    make_policy(
        RETRY={"MAX_ATTEMPTS": 2, "BACKOFF_INITIAL": 0.01, "BACKOFF_MAX": 0.01}, DEADLINE=5.0
    )
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").get("/status/429?retry_after=2")
    assert upstream.count("/status") == 2
    assert resilience_test_mode.sleeps == [2.0]


def test_retry_after_beyond_the_deadline_ends_the_call(make_policy, upstream, resilience_test_mode):
    make_policy(DEADLINE=3.0)
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").get("/status/503?retry_after=10")
    assert upstream.count("/status") == 1
    assert resilience_test_mode.sleeps == []


def test_retries_never_outlast_the_deadline(make_policy, upstream, resilience_test_mode):
    make_policy(
        DEADLINE=2.0,
        # Each attempt starts with at least 0.3 s left (real time: enough to reach the upstream
        # on a loaded machine), so every attempt made is one the upstream sees.
        TIMEOUT={"CONNECT": 0.5, "READ": 1.0, "MINIMUM_TIME_LEFT": 0.3},
        RETRY={
            "MAX_ATTEMPTS": 100,
            "BACKOFF_INITIAL": 0.5,
            "BACKOFF_MAX": 0.5,
            "BACKOFF_MULTIPLIER": 1.0,
            "BUDGET_MIN_RETRIES_PER_SECOND": 10,
        },
        CIRCUIT_BREAKER={"SLIDING_WINDOW_SIZE": 100, "MINIMUM_NUMBER_OF_CALLS": 100},
    )
    with pytest.raises((UpstreamStatusError, DeadlineExceededError)):
        ServiceClient("upstream").get("/status/503")
    # Only the deadline can have stopped it: 100 attempts at <= 0.5 s backoff cannot fit in 2 s.
    assert sum(resilience_test_mode.sleeps) < 2.0 - 0.3
    assert upstream.count("/status") == len(resilience_test_mode.sleeps) + 1 < 100


class Transient(Exception):
    pass


def _slow_failure(clock, seconds: float, calls: list):
    def attempt():
        calls.append(clock.now())
        clock.advance(seconds)
        raise Transient("failed")

    return attempt


def test_no_retry_starts_with_less_than_the_minimum_time_left(make_policy, resilience_test_mode):
    """The review's case: attempts at 0.0 s and 0.991 s under a 1.0 s deadline."""
    clock = resilience_test_mode
    policy = make_policy(
        DEADLINE=1.0,
        TIMEOUT={"CONNECT": 0.3, "READ": 0.6},
        RETRY={
            "MAX_ATTEMPTS": 3,
            "BACKOFF_INITIAL": 0.001,
            "BACKOFF_MAX": 0.001,
            "RETRY_ON_EXCEPTIONS": [Transient],
        },
    )
    calls = []
    with pytest.raises(Transient):
        policy.call(_slow_failure(clock, 0.96, calls), idempotent=True)
    assert len(calls) == 1  # 40 ms left after the first attempt: under the 50 ms minimum
    assert clock.sleeps == []
    # With time left past the minimum, the retry runs.
    calls.clear()
    with pytest.raises(DeadlineExceededError):
        policy.call(_slow_failure(clock, 0.9, calls), idempotent=True)
    assert len(calls) == 2
    assert calls[1] - calls[0] < 1.0 - 0.05


def test_no_first_attempt_under_a_deadline_with_less_than_the_minimum_left(
    make_policy, resilience_test_mode
):
    from resilience import deadline

    policy = make_policy(DEADLINE=1.0, TIMEOUT={"CONNECT": 0.3, "READ": 0.6})
    calls = []
    with deadline.scope(0.03), pytest.raises(DeadlineExceededError, match="MINIMUM_TIME_LEFT"):
        policy.call(lambda: calls.append(1), idempotent=True)
    assert calls == []
    with deadline.scope(0.2):
        policy.call(lambda: calls.append(1), idempotent=True)
    assert calls == [1]


def test_the_minimum_time_left_must_be_shorter_than_the_deadline():
    problems = conf.validate(
        {"p": {"DEADLINE": 1.0, "TIMEOUT": {"CONNECT": 0.3, "READ": 0.5, "MINIMUM_TIME_LEFT": 1.0}}}
    )
    assert [p.path for p in problems] == ["p.TIMEOUT.MINIMUM_TIME_LEFT"]


def test_no_retry_after_circuit_open_or_bulkhead_full(make_policy, upstream):
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 5})
    policy.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        ServiceClient("upstream").get("/ok")
    assert testing.metric("resilience_retry_attempts_total", name="upstream") == 0
    policy.breaker.force_closed()
    calls = []

    def inner():
        calls.append(1)
        raise BulkheadFullError("inner bulkhead full")

    with pytest.raises(BulkheadFullError):
        policy.call(inner, idempotent=True)
    assert calls == [1]


def test_backoff_is_full_jitter_under_an_exponential_cap():
    config = conf.build_config(
        "p",
        {"p": {"RETRY": {"BACKOFF_INITIAL": 0.1, "BACKOFF_MULTIPLIER": 2.0, "BACKOFF_MAX": 0.5}}},
    ).retry
    rng = random.Random(1)
    for retry_number, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (8, 0.5)]:
        samples = [backoff(config, retry_number, rng) for _ in range(500)]
        assert all(0 <= s <= cap for s in samples)
        assert max(samples) > cap * 0.9 and min(samples) < cap * 0.1


def test_retry_after_parses_seconds_and_http_dates():
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_retry_budget_caps_retries_to_a_ratio_of_calls(make_policy, upstream):
    """A dependency failing every call gets at most (1 + ratio) x calls + a small floor."""
    make_policy(
        RETRY={
            "MAX_ATTEMPTS": 3,
            "BUDGET_RATIO": 0.2,
            "BUDGET_MIN_RETRIES_PER_SECOND": 0.5,
            "BUDGET_WINDOW": 10.0,
        },
        CIRCUIT_BREAKER={
            "FAILURE_RATE_THRESHOLD": 100,
            "SLIDING_WINDOW_SIZE": 1000,
            "MINIMUM_NUMBER_OF_CALLS": 1000,
        },
    )
    client = ServiceClient("upstream")
    calls = 100
    for _ in range(calls):
        with pytest.raises(UpstreamStatusError):
            client.get("/status/503")
    floor = 0.5 * 10.0
    assert upstream.count("/status") <= calls * 1.2 + floor
    assert upstream.count("/status") > calls  # the budget still allowed some retries
    assert testing.metric("resilience_retry_budget_exhausted_total", name="upstream") > 0
