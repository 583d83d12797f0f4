"""The chaos API on the real stack: guarded on every service, and one fault for all workers."""

import pytest
import requests

from tests.e2e.conftest import SERVICES

pytestmark = pytest.mark.e2e


@pytest.fixture
def lift(stack):
    yield
    for service in SERVICES:
        requests.delete(stack.url(service, "/chaos/"), headers=stack.chaos_headers, timeout=5)


@pytest.mark.parametrize("service", SERVICES)
def test_the_chaos_api_needs_the_token_on_every_service(stack, service, lift):
    url = stack.url(service, "/chaos/")
    assert requests.put(url, json={"latency_ms": 1}, timeout=5).status_code == 401
    wrong = requests.put(
        url, json={"latency_ms": 1}, headers={"Authorization": "Bearer wrong"}, timeout=5
    )
    assert wrong.status_code == 403
    right = requests.put(url, json={"latency_ms": 1}, headers=stack.chaos_headers, timeout=5)
    assert (right.status_code, right.json()["fault"]["latency_ms"]) == (200, 1)


def test_fail_next_counts_across_every_worker_process(stack, lift):
    """Two gunicorn workers serve payments: "fail the next 4" fails exactly 4 requests in all."""
    requests.put(
        stack.url("payments", "/chaos/"),
        headers=stack.chaos_headers,
        timeout=5,
        json={"fail_next": 4, "error_status": 503, "match": {"path_prefix": "/api/charges/"}},
    )
    statuses = [
        requests.get(
            stack.url("payments", "/api/charges/"), params={"order_id": "x"}, timeout=5
        ).status_code
        for _ in range(12)
    ]
    assert statuses.count(503) == 4 and statuses[:4] == [503] * 4
    metrics = requests.get(stack.url("payments", "/metrics"), timeout=5).text
    assert 'chaos_injected_total{kind="fail_next"} 4.0' in metrics
    assert "chaos_fault_active 1.0" in metrics
