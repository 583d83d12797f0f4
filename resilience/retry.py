"""Retry: which failures are worth another attempt, how long to wait, and the retry budget."""

import collections
import email.utils
import random
import threading
from datetime import UTC, datetime

import requests

from resilience.clock import Clock
from resilience.conf import RetryConfig
from resilience.exceptions import BusinessError, ResilienceError, UpstreamError

# Failures of the transport itself, from code that does not go through ServiceClient.
TRANSIENT_EXCEPTIONS = (
    ConnectionError,
    TimeoutError,
    requests.ConnectionError,
    requests.Timeout,
)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt could succeed where this one failed."""
    if isinstance(exc, BusinessError):
        return False
    if isinstance(exc, UpstreamError):
        return exc.retryable
    if isinstance(exc, ResilienceError):
        return False  # open breaker, full bulkhead, spent deadline: retrying only adds load
    return isinstance(exc, TRANSIENT_EXCEPTIONS)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff(config: RetryConfig, retry_number: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry ``retry_number`` (1 for the first retry)."""
    cap = min(
        config.backoff_max, config.backoff_initial * config.backoff_multiplier ** (retry_number - 1)
    )
    return (rng or random).uniform(0, cap)


class RetryBudget:
    """Retries allowed: ``ratio`` of the calls in the last ``window`` seconds, plus a small floor.

    The floor (``min_per_second`` x ``window``) lets a quiet service still retry; the ratio
    keeps a busy one from sending its failing dependency a multiple of its normal traffic.
    """

    def __init__(self, config: RetryConfig, clock: Clock) -> None:
        self.ratio = config.budget_ratio
        self.window = config.budget_window
        self.floor = config.budget_min_retries_per_second * config.budget_window
        self._clock = clock
        self._calls: collections.deque[float] = collections.deque()
        self._retries: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for q in (self._calls, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def record_call(self) -> None:
        now = self._clock.now()
        with self._lock:
            self._trim(now)
            self._calls.append(now)

    def try_acquire(self) -> bool:
        """Take one retry from the budget; ``False`` when it is spent."""
        now = self._clock.now()
        with self._lock:
            self._trim(now)
            if len(self._retries) >= self.floor + self.ratio * len(self._calls):
                return False
            self._retries.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._retries.clear()
