"""Defects a hostile review of ``resilience/`` found (issue 15); each test failed before its fix.

The Redis ones (half-open on Redis, the incarnation, a link that never comes up) are in
test_redis_storage.py, beside the Redis they need.
"""

from resilience import metrics, testing
from resilience.exceptions import CircuitOpenError, UpstreamTimeoutError
from tests.resilience import workers


def test_a_disabled_breaker_counts_its_successes_as_nothing(make_policy):
    """A slot of -1 indexed the last counter: 3 successes read `timeout_calls{deadline} 3`."""
    policy = make_policy()
    policy.breaker.disable()
    assert [policy.call(lambda: "ok", idempotent=True) for _ in range(3)] == ["ok"] * 3
    for kind in ("attempt", "deadline"):
        assert testing.metric("resilience_timeout_calls_total", name="upstream", kind=kind) == 0
    assert (
        testing.metric("resilience_circuitbreaker_calls_total", name="upstream", kind="successful")
        == 0
    )
    assert (
        testing.metric(
            "resilience_retry_calls_total", name="upstream", kind="successful_without_retry"
        )
        == 3
    )


class Hostile(Exception):
    pass


def test_the_fallback_reason_label_is_one_of_a_fixed_set(make_policy):
    """It took any exception class name: plain code could mint a label per class it raised."""
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 1})
    raised = [
        Hostile(),
        KeyError("k"),
        type("Minted1234Error", (Exception,), {})(),
        TimeoutError(),
        UpstreamTimeoutError(),
        CircuitOpenError(),
    ]
    for exc in raised:

        def fail(exc=exc):
            raise exc

        assert policy.call(fail, fallback=lambda e: "fallback", idempotent=True) == "fallback"
    metrics.flush()
    labels = {
        sample.labels["reason"]
        for family in metrics.fallback_calls.collect()
        for sample in family.samples
        if sample.labels.get("name") == "upstream" and sample.name.endswith("_total")
    }
    assert labels == {"other", "timeout", "upstream_timeout", "circuit_open"}
    assert labels <= set(metrics.REASONS)


def test_a_worker_that_starts_does_not_hide_another_workers_open_breaker(tmp_path):
    """The merged state gauge read closed while a worker's breaker was open: building a policy
    set it to closed, as if that were the latest transition."""
    worker = """
import sys
import django; django.setup()
from resilience import conf
from resilience.breaker import CircuitBreaker
config = conf.build_config("payments", {"payments": {}})
breaker = CircuitBreaker("payments", config.circuit_breaker)
if sys.argv[1] == "trip":
    breaker.force_open()
"""
    for action in ("trip", "start"):  # the second worker only builds its policy, later
        workers.run_worker(tmp_path, worker, action)
    out = workers.scrape(tmp_path)
    shown = [
        line.split('state="')[1].split('"')[0]
        for line in out.splitlines()
        if line.startswith('resilience_circuitbreaker_state{name="payments"')
        and line.endswith(" 1.0")
    ]
    assert shown == ["open"]
    # And the series is there before any transition: a worker that only started shows closed.
    alone = tmp_path / "alone"
    workers.run_worker(alone, worker, "start")
    assert 'resilience_circuitbreaker_state{name="payments",state="closed"} 1.0' in workers.scrape(
        alone
    )
    per_process = sorted(
        line.split('state="')[1].split('"')[0]
        for line in out.splitlines()
        if line.startswith("resilience_circuitbreaker_process_state{") and line.endswith(" 1.0")
    )
    assert per_process == ["closed", "open"]  # each worker's own view, labelled by pid
