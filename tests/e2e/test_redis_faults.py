"""End to end, on a stack whose breaker state and gateway cache live in a redis-server of this
module's own: what outside clients cannot do to the breakers, and what a hung or dead Redis
costs the user (nothing but a few ms)."""

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.redis_server import RedisServer
from workshop.scenarios.runner import breaker_states
from workshop.scenarios.stack import RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis):
    with RunningStack(tmp_path_factory.mktemp("stack"), redis_url=redis.url) as running:
        yield running


def order(stack, show_id=1, headers=None):
    return requests.post(
        stack.url("gateway", "/api/orders/"),
        json={
            "show_id": show_id,
            "quantity": 1,
            "email": "fan@example.com",
            "card_token": "tok_visa",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex, **(headers or {})},
        timeout=30,
    )


def opened(stack, service: str) -> list[str]:
    """Transitions to open that ``service``'s processes made."""
    return [
        labels["name"]
        for name, labels, value in stack.metrics(service)
        if name == "resilience_circuitbreaker_transitions_total"
        and labels["to_state"] == "open"
        and value
    ]


def test_a_deadline_header_from_outside_opens_no_breaker(stack):
    """48 requests with X-Deadline-Remaining-Ms of 1, 20, 0 and -5 once opened the gateway's
    breakers; afterwards 6 of 9 ordinary requests failed and recommendations fell back."""
    gateway = stack.urls["gateway"]
    for value in ("1", "20", "0", "-5"):
        hostile = {"X-Deadline-Remaining-Ms": value}
        for _ in range(4):
            for path in ("/api/shows/", "/api/shows/2/recommendations/", "/api/shows/2/"):
                answer = requests.get(gateway + path, headers=hostile, timeout=10)
                assert answer.status_code == 200, (value, path, answer.text)
    assert opened(stack, "gateway") == []
    assert breaker_states(stack, "gateway") == {
        "inventory": "closed",
        "recommendations": "closed",
        "orders": "closed",
    }
    ordinary = [requests.get(gateway + "/api/shows/", timeout=10) for _ in range(3)]
    ordinary += [order(stack, show_id=3) for _ in range(3)]
    recommendations = [
        requests.get(gateway + "/api/shows/2/recommendations/", timeout=10) for _ in range(3)
    ]
    assert [r.status_code for r in ordinary] == [200, 200, 200, 201, 201, 201]
    assert [r.json()["source"] for r in recommendations] == ["live"] * 3


def test_an_order_with_a_hostile_deadline_is_still_placed_under_the_gateways_own(stack):
    answer = order(stack, show_id=4, headers={"X-Deadline-Remaining-Ms": "1"})
    assert (answer.status_code, answer.json()["status"]) == (201, "confirmed")


def test_with_redis_hung_the_stack_keeps_serving_at_full_speed(stack, redis):
    gateway = stack.urls["gateway"]
    redis.hang()
    try:
        latencies, statuses = [], []
        for i in range(30):
            path = ("/api/shows/", "/api/shows/5/", "/api/shows/5/recommendations/")[i % 3]
            start = time.monotonic()
            statuses.append(requests.get(gateway + path, timeout=10).status_code)
            latencies.append(time.monotonic() - start)
        orders = [order(stack, show_id=5) for _ in range(5)]
    finally:
        redis.resume()
    assert statuses == [200] * 30
    assert [(o.status_code, o.json()["status"]) for o in orders] == [(201, "confirmed")] * 5
    # Through the whole stack (the gateway's cache is in the same hung Redis too), not the
    # breaker's 50 ms alone: tests/resilience/test_redis_storage.py bounds that.
    assert statistics.median(latencies) < 0.25, latencies
    assert max(latencies) < 2.0, latencies


def test_with_redis_hung_a_hung_notifications_still_opens_its_breaker(stack, redis):
    """As with Redis dead, on each process's own state: the breaker works without its Redis.
    Before the payments one below: with orders' breaker for payments open, no order would
    reach notifications. It leaves the breaker for notifications open (placed orders go on)."""
    redis.hang()
    try:
        stack.inject(
            "notifications", {"hang": True, "match": {"path_prefix": "/api/notifications/"}}
        )
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda _: order(stack, show_id=7), range(12)))
        assert [a.status_code for a in answers] == [201] * 12
        assert {a.json()["status"] for a in answers} == {"confirmed"}
        assert breaker_states(stack, "orders")["notifications"] == "open"
    finally:
        stack.lift("notifications")
        redis.resume()


def test_with_redis_dead_a_hung_payments_still_opens_its_breaker(stack, redis):
    redis.kill()
    try:
        stack.inject("payments", {"hang": True, "match": {"path_prefix": "/api/charges/"}})
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda _: order(stack, show_id=6), range(12)))
        assert [a.status_code for a in answers] == [201] * 12
        assert {a.json()["status"] for a in answers} == {"payment_pending"}
        assert breaker_states(stack, "orders")["payments"] == "open"
    finally:
        stack.lift("payments")
        redis.start()
