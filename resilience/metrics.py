"""Prometheus metrics of every policy, named after Resilience4j's Micrometer metrics.

Calls never touch prometheus_client. Each policy counts in plain numbers of its own process
(``Stats``), under one lock per call, and a thread adds them to the Prometheus metrics every
``FLUSH_INTERVAL`` seconds (and at exit). prometheus_client takes a lock per update and, under
gunicorn with ``PROMETHEUS_MULTIPROC_DIR``, writes each one to a memory-mapped file: eight of
those per call cost more than the whole policy does now (docs/benchmarks.md).

What that means for a scrape: ``/metrics`` flushes the process that answers it first, so its
own counts are exact; the counts of the other worker processes may lag by up to
``FLUSH_INTERVAL``. A SIGKILLed process loses at most its last ``FLUSH_INTERVAL`` of counts.
Gauges of instantaneous values (free bulkhead slots, failure rates) are sampled at each flush.
"""

import atexit
import bisect
import math
import os
import threading
import time
from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

from resilience import exceptions

FLUSH_INTERVAL = 1.0
STATES = ("closed", "open", "half-open")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0, 30.0)

breaker_state = Gauge(
    "resilience_circuitbreaker_state",
    "1 for the state the circuit breaker last moved to in any live worker process, 0 for the "
    "others: with Redis storage the shared state, with memory storage the latest transition "
    "(closed before any: a worker that starts never hides another's open breaker).",
    ["name", "state"],
    multiprocess_mode="livemostrecent",
)
breaker_process_state = Gauge(
    "resilience_circuitbreaker_process_state",
    "1 for the state this process sees the circuit breaker in, 0 for the others; one series per "
    "worker process (label pid) under gunicorn.",
    ["name", "state"],
    multiprocess_mode="liveall",
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
    "Timeouts by kind: attempt (one attempt ran out of its own time), deadline (the call's "
    "deadline ran out, or cut an attempt short).",
    ["name", "kind"],
)
fallback_calls = Counter(
    "resilience_fallback_calls",
    "Calls answered by their fallback, by the exception that ended the call.",
    ["name", "reason"],
)
ratelimiter_calls = Counter(
    "resilience_ratelimiter_calls",
    "Attempts by rate limiter outcome: permitted (at once or after a wait), rejected.",
    ["name", "kind"],
)
ratelimiter_available = Gauge(
    "resilience_ratelimiter_available_permissions",
    "Permits left in the rate limiter's current cycle, summed over live worker processes "
    "(negative: reserved ahead by waiting callers).",
    ["name"],
    multiprocess_mode="livesum",
)
admission_requests = Counter(
    "resilience_admission_requests",
    "Requests by admission outcome (admitted, shed_queue_time, shed_in_flight) and criticality "
    "(critical, default, sheddable); health, metrics and chaos paths are not counted.",
    ["criticality", "outcome"],
)
_admission_in_flight = None


def admission_in_flight() -> Gauge:
    """The gauge of requests admission control let in. Made at first use: a gauge without
    labels writes its file as it is made, and at import the metrics directory may not exist
    yet (a process no gunicorn started: the app's ready() makes it)."""
    global _admission_in_flight
    with _stats_lock:
        if _admission_in_flight is None:
            _admission_in_flight = Gauge(
                "resilience_admission_in_flight",
                "Requests inside Django that admission control let in, summed over live worker "
                "processes.",
                multiprocess_mode="livesum",
            )
    return _admission_in_flight


overload_refusals = Counter(
    "resilience_overload_refusals",
    "Calls refused for overload, by who refused: dependency (a 503 with X-Overloaded) or "
    "throttle (held back here by adaptive throttling).",
    ["name", "by"],
)
call_duration = Histogram(
    "resilience_call_duration_seconds",
    "Duration of whole policy calls (bulkhead to fallback), by outcome.",
    ["name", "outcome"],
    buckets=DURATION_BUCKETS,
)
policy_setting = Gauge(
    "resilience_policy_setting",
    "A policy's configuration, for dashboards and alerts: attempt_timeout_seconds "
    "(CONNECT + READ), deadline_seconds, slow_call_duration_seconds, "
    "wait_duration_in_open_state_seconds, failure_rate_threshold and slow_call_rate_threshold "
    "(percent), enabled (1 or 0).",
    ["name", "setting"],
    multiprocess_mode="livemax",
)
storage_up = Gauge(
    "resilience_storage_up",
    "1 while the Redis that holds shared breaker state answers this process within "
    "RESILIENCE_REDIS['SOCKET_TIMEOUT'], else 0 (also when it never has: from the start).",
    ["storage"],
    multiprocess_mode="livemin",
)
storage_events = Counter(
    "resilience_storage_events",
    "Events of the link to the Redis that holds shared breaker state: unreachable, reachable, "
    "reseeded (Redis had lost the state and was given this process's).",
    ["storage", "event"],
)

# -- per-process counts ------------------------------------------------------------------------------

# Slots of Stats.counts, and the Prometheus counter and labels each one is added to.
(
    BULKHEAD_PERMITTED,
    BULKHEAD_REJECTED,
    CALLS_SUCCESSFUL,
    CALLS_FAILED,
    CALLS_SLOW_SUCCESSFUL,
    CALLS_SLOW_FAILED,
    CALLS_IGNORED,
    CALLS_NOT_PERMITTED,
    RETRY_SUCCESSFUL_WITHOUT,
    RETRY_SUCCESSFUL_WITH,
    RETRY_FAILED_WITHOUT,
    RETRY_FAILED_WITH,
    RETRY_ATTEMPTS,
    RETRY_BUDGET_EXHAUSTED,
    TIMEOUT_ATTEMPT,
    TIMEOUT_DEADLINE,
    RATE_LIMITER_PERMITTED,
    RATE_LIMITER_REJECTED,
    OVERLOAD_BY_DEPENDENCY,
    OVERLOAD_BY_THROTTLE,
) = range(20)
_SLOTS = (
    (bulkhead_calls, ("permitted",)),
    (bulkhead_calls, ("rejected",)),
    (breaker_calls, ("successful",)),
    (breaker_calls, ("failed",)),
    (breaker_calls, ("slow_successful",)),
    (breaker_calls, ("slow_failed",)),
    (breaker_calls, ("ignored",)),
    (breaker_calls, ("not_permitted",)),
    (retry_calls, ("successful_without_retry",)),
    (retry_calls, ("successful_with_retry",)),
    (retry_calls, ("failed_without_retry",)),
    (retry_calls, ("failed_with_retry",)),
    (retry_attempts, ()),
    (retry_budget_exhausted, ()),
    (timeouts, ("attempt",)),
    (timeouts, ("deadline",)),
    (ratelimiter_calls, ("permitted",)),
    (ratelimiter_calls, ("rejected",)),
    (overload_refusals, ("dependency",)),
    (overload_refusals, ("throttle",)),
)
# Indexes of Stats.durations, by the outcome label of call_duration.
OUTCOMES = ("success", "failure", "fallback", "ignored")
SUCCESS, FAILURE, FALLBACK, IGNORED = range(4)
_BOUNDS = (*DURATION_BUCKETS, math.inf)


class Stats:
    """The counts of one policy (or breaker) name in this process since the last flush.

    Writers hold ``lock`` while they add, so that a flush never loses a count; ``bucket()``
    gives the histogram slot of a duration. ``bulkhead`` and ``breaker`` are sampled at
    each flush for their gauges.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.counts = [0] * len(_SLOTS)
        self.durations = [[0] * len(_BOUNDS) for _ in OUTCOMES]
        self.duration_sums = [0.0] * len(OUTCOMES)
        self.fallbacks: Tally = Tally()
        # What each flush samples. The bulkhead and the budget are guarded by ``lock`` too, and
        # take the child's new one in after_fork(lock); the breaker has locks of its own.
        self.bulkhead = None  # .max_concurrent_calls, .in_flight
        self.breaker = None  # .gauge_values() -> (failure rate, slow-call rate)
        self.budget = None  # the retry budget of the policy
        self.rate_limiter = None  # .available
        self.throttle = None  # adaptive throttling: its refusals are the parent's, not ours

    bucket = staticmethod(lambda seconds: bisect.bisect_left(_BOUNDS, seconds))

    def observe(self, outcome: int, seconds: float) -> None:
        """Count a whole call's duration (callers on the hot path inline this under ``lock``)."""
        with self.lock:
            self.durations[outcome][bisect.bisect_left(_BOUNDS, seconds)] += 1
            self.duration_sums[outcome] += seconds

    def add(self, slot: int, n: int = 1) -> None:
        with self.lock:
            self.counts[slot] += n

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        self.take()
        for part in (self.bulkhead, self.budget, self.rate_limiter):
            if part is not None:
                part.after_fork(self.lock)
        if self.breaker is not None:
            self.breaker.after_fork()
        if self.throttle is not None:
            self.throttle.reset()

    def take(self):
        """Everything counted since the last take, and zero again."""
        with self.lock:
            counts, self.counts = self.counts, [0] * len(_SLOTS)
            durations, self.durations = self.durations, [[0] * len(_BOUNDS) for _ in OUTCOMES]
            sums, self.duration_sums = self.duration_sums, [0.0] * len(OUTCOMES)
            fallbacks, self.fallbacks = self.fallbacks, Tally()
        return counts, durations, sums, fallbacks

    def flush(self) -> None:
        counts, durations, sums, fallbacks = self.take()
        name = self.name
        for slot, n in enumerate(counts):
            if n:
                metric, labels = _SLOTS[slot]
                metric.labels(name, *labels).inc(n)
        for outcome, buckets in enumerate(durations):
            if any(buckets):
                # prometheus_client has no public way to add n observations at once; its
                # buckets and sum are what observe() adds to (pinned by a test).
                child = call_duration.labels(name, OUTCOMES[outcome])
                child._sum.inc(sums[outcome])
                for i, n in enumerate(buckets):
                    if n:
                        child._buckets[i].inc(n)
        for reason, n in fallbacks.items():
            fallback_calls.labels(name, reason).inc(n)
        if self.bulkhead is not None:
            bulkhead = self.bulkhead
            bulkhead_available.labels(name).set(bulkhead.max_concurrent_calls - bulkhead.in_flight)
        if self.rate_limiter is not None:
            ratelimiter_available.labels(name).set(self.rate_limiter.available)
        if self.breaker is not None:
            failure_rate, slow_rate = self.breaker.gauge_values()
            breaker_failure_rate.labels(name).set(failure_rate)
            breaker_slow_call_rate.labels(name).set(slow_rate)


_stats: dict[str, Stats] = {}
_stats_lock = threading.Lock()
_flusher_pid: int | None = None


def stats_for(name: str) -> Stats:
    """The counts of ``name`` in this process; the same object for every policy of that name."""
    stats = _stats.get(name)
    if stats is None:
        with _stats_lock:
            stats = _stats.get(name)
            if stats is None:
                stats = _stats[name] = Stats(name)
            _ensure_flusher()
    return stats


_flush_hooks: list = []  # (flush, after_fork) of counts kept elsewhere (admission control)


def register_flush(flush_fn, after_fork_fn) -> None:
    """Have ``flush_fn()`` run at every flush, and ``after_fork_fn()`` in a child process."""
    _flush_hooks.append((flush_fn, after_fork_fn))
    with _stats_lock:
        _ensure_flusher()


def flush() -> None:
    """Add every count of this process to the Prometheus metrics now."""
    for stats in list(_stats.values()):
        stats.flush()
    for flush_fn, _ in list(_flush_hooks):
        flush_fn()


def forget() -> None:
    """Drop every count not yet flushed (tests)."""
    for stats in list(_stats.values()):
        stats.take()


def _ensure_flusher() -> None:
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    _flusher_pid = os.getpid()  # first use, or a child process after fork: a fresh thread
    threading.Thread(target=_flush_forever, name="resilience-metrics", daemon=True).start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception:  # pragma: no cover - a broken metrics file must not stop the thread
            import logging

            logging.getLogger("resilience.metrics").exception("flushing resilience metrics")


atexit.register(flush)


def _after_fork_in_child() -> None:
    """A child process counts afresh (the parent's counts are the parent's to flush), with
    locks of its own (one held by a parent thread at the fork would never be released) and a
    flusher thread of its own."""
    global _stats_lock, _flusher_pid
    _stats_lock = threading.Lock()
    _flusher_pid = None
    for stats in _stats.values():
        stats.after_fork()
    for _, after_fork_fn in _flush_hooks:
        after_fork_fn()
    if _stats or _flush_hooks:
        _ensure_flusher()


os.register_at_fork(after_in_child=_after_fork_in_child)


# The time a breaker just built writes its state at in the merged gauge: before any real
# transition (those are written at time.time()), so that "livemostrecent" shows the latest
# transition of any worker, and the series is there before the first one.
_BUILT = 1.0


def set_state(name: str, state: str, *, changed: bool = True) -> None:
    """The breaker's state, for the state gauges (called on changes only, not per call).

    ``changed=False`` (a breaker just built): a worker that merely starts must not hide
    another's open breaker behind its own "closed", so its merged-gauge samples are dated
    ``_BUILT``, older than any transition (prometheus_client's value API, as in ``flush``;
    pinned by tests/resilience/test_review.py).
    """
    for each in STATES:
        value = 1 if each == state else 0
        if changed:
            breaker_state.labels(name, each).set(value)
        else:
            breaker_state.labels(name, each)._value.set(float(value), timestamp=_BUILT)
        breaker_process_state.labels(name, each).set(value)


# The labels of fallback_calls{reason}, most specific first: a fixed set, whatever plain code
# raises, so that the label cannot grow without bound.
_REASONS = (
    (exceptions.CircuitOpenError, "circuit_open"),
    (exceptions.BulkheadFullError, "bulkhead_full"),
    (exceptions.RateLimitedError, "rate_limited"),
    (exceptions.DeadlineExceededError, "deadline_exceeded"),
    (exceptions.OverloadedError, "overloaded"),
    (exceptions.UpstreamTimeoutError, "upstream_timeout"),
    (exceptions.UpstreamConnectionError, "upstream_connection"),
    (exceptions.UpstreamStatusError, "upstream_status"),
    (exceptions.UpstreamError, "upstream"),
    (TimeoutError, "timeout"),
    (ConnectionError, "connection"),
    (OSError, "io"),
)
REASONS = (*(label for _, label in _REASONS), "other")


def reason(exc: BaseException) -> str:
    """The label of the exception that ended a call, one of ``REASONS``: a fixed set, whatever
    plain code raises (``CircuitOpenError`` -> ``circuit_open``, ``KeyError`` -> ``other``)."""
    for cls, label in _REASONS:
        if isinstance(exc, cls):
            return label
    return "other"


def describe_policy(config) -> None:
    """Publish a policy's settings (``policy_setting``); called once when it is built."""
    breaker = config.circuit_breaker
    for setting, value in (
        ("attempt_timeout_seconds", config.timeout.connect + config.timeout.read),
        ("deadline_seconds", config.deadline),
        ("slow_call_duration_seconds", breaker.slow_call_duration),
        ("wait_duration_in_open_state_seconds", breaker.wait_duration_in_open_state),
        ("failure_rate_threshold", breaker.failure_rate_threshold),
        ("slow_call_rate_threshold", breaker.slow_call_rate_threshold),
        ("enabled", 1 if config.enabled else 0),
    ):
        policy_setting.labels(config.name, setting).set(value)


# -- a service's own collectors ------------------------------------------------------------------

_collectors: list = []


def register_collector(collector) -> None:
    """Add a collector of the service's own series (read at scrape time, e.g. from its
    database) to the ``/metrics`` view; once per collector type, whoever calls it again."""
    if not any(type(c) is type(collector) for c in _collectors):
        _collectors.append(collector)


def registered_collectors() -> list:
    return list(_collectors)
