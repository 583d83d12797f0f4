"""Prometheus metrics of every policy, named after Resilience4j's Micrometer metrics.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` before the process
starts: counters and histograms are then summed across workers by ``resilience.views.metrics``,
and each gauge declares how its per-worker values combine.
"""

from prometheus_client import Counter, Gauge, Histogram

STATES = ("closed", "open", "half-open")

breaker_state = Gauge(
    "resilience_circuitbreaker_state",
    "1 for the state this process last saw the circuit breaker in, 0 for the others.",
    ["name", "state"],
    multiprocess_mode="livemax",
)
breaker_calls = Counter(
    "resilience_circuitbreaker_calls",
    "Calls through a circuit breaker by outcome: successful, failed, slow_successful, "
    "slow_failed, ignored, not_permitted.",
    ["name", "kind"],
)
breaker_failure_rate = Gauge(
    "resilience_circuitbreaker_failure_rate",
    "Failure rate in percent over the sliding window; -1 until the minimum number of calls.",
    ["name"],
    multiprocess_mode="livemax",
)
breaker_slow_call_rate = Gauge(
    "resilience_circuitbreaker_slow_call_rate",
    "Slow-call rate in percent over the sliding window; -1 until the minimum number of calls.",
    ["name"],
    multiprocess_mode="livemax",
)
breaker_transitions = Counter(
    "resilience_circuitbreaker_transitions",
    "State transitions of a circuit breaker, counted by the process that made them.",
    ["name", "from_state", "to_state"],
)
retry_calls = Counter(
    "resilience_retry_calls",
    "Calls by retry outcome: successful_without_retry, successful_with_retry, "
    "failed_without_retry, failed_with_retry.",
    ["name", "kind"],
)
retry_attempts = Counter(
    "resilience_retry_attempts",
    "Retry attempts made (the first attempt of a call is not counted).",
    ["name"],
)
retry_budget_exhausted = Counter(
    "resilience_retry_budget_exhausted",
    "Retries not made because the retry budget was spent.",
    ["name"],
)
bulkhead_available = Gauge(
    "resilience_bulkhead_available_concurrent_calls",
    "Free concurrent-call slots of the bulkhead, summed over live worker processes.",
    ["name"],
    multiprocess_mode="livesum",
)
bulkhead_max = Gauge(
    "resilience_bulkhead_max_allowed_concurrent_calls",
    "Concurrent-call slots of the bulkhead, summed over live worker processes.",
    ["name"],
    multiprocess_mode="livesum",
)
bulkhead_calls = Counter(
    "resilience_bulkhead_calls",
    "Calls by bulkhead outcome: permitted, rejected.",
    ["name", "kind"],
)
timeouts = Counter(
    "resilience_timeout_calls",
    "Timeouts by kind: attempt (one attempt ran out of time), deadline (the whole call did).",
    ["name", "kind"],
)
fallback_calls = Counter(
    "resilience_fallback_calls",
    "Calls answered by their fallback, by the exception that ended the call.",
    ["name", "reason"],
)
call_duration = Histogram(
    "resilience_call_duration_seconds",
    "Duration of whole policy calls (bulkhead to fallback), by outcome.",
    ["name", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0, 30.0),
)


def set_state(name: str, state: str) -> None:
    for each in STATES:
        breaker_state.labels(name, each).set(1 if each == state else 0)


def reason(exc: BaseException) -> str:
    """A short label for the exception that ended a call: ``CircuitOpenError`` -> ``circuit_open``."""
    label = type(exc).__name__
    for suffix in ("Error", "Exception"):
        if label.endswith(suffix) and label != suffix:
            label = label[: -len(suffix)]
    out = []
    for i, ch in enumerate(label):
        if ch.isupper() and i and not label[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
