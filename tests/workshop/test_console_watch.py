"""The control room's arithmetic on readings of /metrics: rates, percentiles, one state per edge."""

import pytest

from workshop.console.watch import Reading, describe_fault, edge_view, quantile, rate

BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf")


def reading(at: float, samples, health=None) -> Reading:
    r = Reading("orders", at)
    r.up = True
    r.samples = samples
    r.health = health or {}
    return r


def buckets(name: str, counts: dict[str, float], outcome="success"):
    """Cumulative buckets, as /metrics shows them."""
    total, samples = 0.0, []
    for bound in BOUNDS:
        total += counts.get(bound, 0.0)
        samples.append(
            (
                "resilience_call_duration_seconds_bucket",
                {"name": name, "outcome": outcome, "le": bound},
                total,
            )
        )
    return samples


def test_a_rate_is_the_difference_per_second_and_a_restart_counts_from_zero():
    calls = "resilience_retry_calls_total"
    then = reading(10.0, [(calls, {"name": "payments", "kind": "successful_without_retry"}, 40.0)])
    now = reading(15.0, [(calls, {"name": "payments", "kind": "successful_without_retry"}, 60.0)])
    assert rate(now, then, calls, name="payments") == 4.0
    restarted = reading(
        20.0, [(calls, {"name": "payments", "kind": "successful_without_retry"}, 5.0)]
    )
    assert rate(restarted, now, calls, name="payments") == 1.0
    assert rate(now, None, calls, name="payments") is None
    assert rate(now, then, calls, name="inventory") is None  # no data yet, not zero


def test_percentiles_come_from_the_buckets_added_between_two_readings_of_one_dependency():
    then = reading(0.0, buckets("payments", {"0.01": 100}) + buckets("inventory", {"1.0": 50}))
    later = buckets("payments", {"0.01": 100, "0.05": 90, "0.5": 10}) + buckets(
        "inventory", {"1.0": 500}
    )
    now = reading(10.0, later)
    # 100 new calls to payments: 90 in (0.025, 0.05], 10 in (0.25, 0.5]
    assert quantile(0.5, now, then, "resilience_call_duration_seconds", name="payments") == (
        pytest.approx(0.025 + 0.025 * 50 / 90)
    )
    assert quantile(0.99, now, then, "resilience_call_duration_seconds", name="payments") == (
        pytest.approx(0.25 + 0.25 * 9 / 10)
    )
    assert quantile(0.5, now, now, "resilience_call_duration_seconds", name="payments") is None


def test_ignored_outcomes_do_not_move_the_percentiles():
    then = reading(0.0, buckets("payments", {}) + buckets("payments", {}, outcome="ignored"))
    now = reading(
        5.0,
        buckets("payments", {"0.01": 10}) + buckets("payments", {"+Inf": 10}, outcome="ignored"),
    )
    assert quantile(0.99, now, then, "resilience_call_duration_seconds", name="payments") <= 0.01


def states(name, per_pid: dict[str, str], shared: str):
    samples = []
    for pid, state in per_pid.items():
        for each in ("closed", "open", "half-open"):
            samples.append(
                (
                    "resilience_circuitbreaker_process_state",
                    {"name": name, "state": each, "pid": pid},
                    float(each == state),
                )
            )
    for each in ("closed", "open", "half-open"):
        samples.append(
            (
                "resilience_circuitbreaker_state",
                {"name": name, "state": each},
                float(each == shared),
            )
        )
    return samples


def test_with_memory_storage_the_edge_shows_the_worst_state_any_worker_sees():
    """The most recent change (the coherent gauge) says closed; one worker of two is open."""
    now = reading(
        1.0,
        states("payments", {"101": "closed", "102": "open"}, shared="closed"),
        health={"circuit_breakers": {"payments": {"storage": "memory", "mode": "normal"}}},
    )
    edge = edge_view("orders", "payments", now, None, None)
    assert (edge["state"], edge["state_source"]) == ("open", "worst of 2 worker(s): open in 1")
    assert edge["calls_total"] is None and edge["calls_per_second"] is None  # no data yet


def test_with_redis_storage_the_edge_shows_the_shared_state():
    now = reading(
        1.0,
        states("payments", {"101": "closed", "102": "open"}, shared="half-open"),
        health={"circuit_breakers": {"payments": {"storage": "redis", "mode": "normal"}}},
    )
    edge = edge_view("orders", "payments", now, None, None)
    assert (edge["state"], edge["state_source"]) == ("half-open", "shared (Redis)")


def test_a_fault_is_described_as_a_person_would_say_it():
    assert describe_fault({"hang": True, "match": {"path_prefix": "/api/charges/"}}) == (
        "hang on /api/charges/"
    )
    assert describe_fault({"error_rate": 0.5, "error_status": 503, "latency_ms": 200}) == (
        "+200 ms, 50% errors (503) on every request"
    )
