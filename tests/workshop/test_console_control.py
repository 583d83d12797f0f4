"""The control room's check that a fault landed, against a real HTTP server that applies it,
or does not (the OpenTelemetry demo's flags that silently did nothing)."""

import pytest

from workshop.console.control import landed


@pytest.fixture
def service(settings, upstream):
    settings.SERVICE_URLS = {**settings.SERVICE_URLS, "probed": upstream.url}
    return "probed"


def test_a_latency_the_service_does_not_add_is_reported_as_not_landed(service, upstream):
    result = landed(service, {"latency_ms": 500, "match": {"path_prefix": "/ok"}})
    assert result["landed"] is False
    assert "the fault adds 500 ms" in result["evidence"]
    assert upstream.count("/ok") == 1


def test_a_latency_the_service_adds_is_reported_as_landed(service):
    result = landed(service, {"latency_ms": 300, "match": {"path_prefix": "/delay/0.3"}})
    assert result["landed"] is True


def test_errors_are_counted_over_ten_probes_on_the_matched_path_and_method(service, upstream):
    result = landed(
        service,
        {"error_rate": 1.0, "error_status": 503, "match": {"path_prefix": "/status/503"}},
    )
    assert result == {
        "landed": True,
        "evidence": "10 of 10 probes answered 503 (error rate set: 100%)",
    }
    assert upstream.count("/status/503") == 10
    assert {r["method"] for r in upstream.requests} == {"GET"}


def test_a_low_error_rate_that_ten_probes_did_not_see_is_inconclusive_not_false(service):
    result = landed(service, {"error_rate": 0.05, "match": {"path_prefix": "/ok"}})
    assert result["landed"] is None and "too few probes" in result["evidence"]


def test_a_hang_is_a_probe_without_an_answer(service, upstream):
    assert landed(service, {"hang": True, "match": {"path_prefix": "/hang"}})["landed"] is True
    assert landed(service, {"hang": True, "match": {"path_prefix": "/ok"}})["landed"] is False


def test_fail_next_is_never_probed(service, upstream):
    result = landed(service, {"fail_next": 3})
    assert result["landed"] is None and upstream.count() == 0
