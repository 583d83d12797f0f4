"""``/metrics`` and ``/health/``: what operators and Prometheus read."""

import pytest

from resilience.exceptions import UpstreamStatusError
from resilience.http import ServiceClient
from tests.resilience import workers


@pytest.mark.django_db
def test_health_reports_every_breaker_and_stays_200_when_one_is_open(client, make_policy):
    policy = make_policy()
    policy.breaker.force_open()
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["circuit_breakers"]["upstream"] == {
        "state": "open",
        "mode": "forced-open",
        "enabled": True,
        "bulkhead_available": 10,
        "storage": "memory",
    }


def test_metrics_exposes_the_resilience_metrics(client, make_policy, upstream):
    make_policy(RETRY={"MAX_ATTEMPTS": 2})
    with pytest.raises(UpstreamStatusError):
        ServiceClient("upstream").get("/status/503")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'resilience_circuitbreaker_state{name="upstream",state="closed"} 1.0' in text
    assert 'resilience_circuitbreaker_process_state{name="upstream",state="closed"} 1.0' in text
    assert 'resilience_retry_calls_total{kind="failed_with_retry",name="upstream"} 1.0' in text
    assert 'resilience_circuitbreaker_calls_total{kind="failed",name="upstream"} 2.0' in text
    assert "resilience_call_duration_seconds_bucket" in text


def test_metrics_are_summed_across_worker_processes(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, each worker writes its own file and /metrics adds them up."""
    script = """
import django; django.setup()
from resilience import metrics
metrics.breaker_calls.labels("payments", "failed").inc(3)
"""
    for _ in range(2):
        workers.run_worker(tmp_path, script)
    out = workers.scrape(tmp_path)
    assert 'resilience_circuitbreaker_calls_total{kind="failed",name="payments"} 6.0' in out
