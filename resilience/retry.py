"""Retry: which failures are worth another attempt, how long to wait, and the retry budget."""

import email.utils
import math
import random
import threading
from datetime import UTC, datetime

import requests
from redis import RedisError

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


def is_transient(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether another attempt could succeed where this one failed.

    ``also``: more exception classes to retry (``RETRY.RETRY_ON_EXCEPTIONS``), for plain code.
    """
    if isinstance(exc, BusinessError):
        return False
    if isinstance(exc, UpstreamError):
        return exc.retryable
    if isinstance(exc, ResilienceError):
        return False  # open breaker, full bulkhead, spent deadline: retrying only adds load
    return isinstance(exc, (*TRANSIENT_EXCEPTIONS, *also))


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


# A floor shared by every process of a service: the retries taken from it in each of the last
# ``window`` seconds (Redis' clock), one key per second.
_SHARED_FLOOR = """
local prefix, window, floor = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(redis.call('TIME')[1])
local taken = 0
for i = 0, window - 1 do
  taken = taken + tonumber(redis.call('GET', prefix .. ':' .. (now - i)) or '0')
end
if taken >= floor then return 0 end
redis.call('INCR', prefix .. ':' .. now)
redis.call('EXPIRE', prefix .. ':' .. now, window + 1)
return 1
"""


class RetryBudget:
    """Retries allowed: ``ratio`` of the calls in the last ``window`` seconds, plus a floor.

    The floor (``BUDGET_MIN_RETRIES_PER_SECOND`` x ``BUDGET_WINDOW``) lets a quiet service still
    retry; the ratio keeps a busy one from sending its failing dependency a multiple of its
    normal traffic. Calls and retries are counted per process in one-second buckets. The
    ratio needs nothing more: each process's share of the calls earns its share of the
    retries. The floor is per service when the breaker's state is in Redis (``share_floor``):
    every process then takes from one floor there, and only when its own ratio is spent.
    Without Redis, or while Redis is unreachable, each process has the whole floor.
    """

    def __init__(self, config: RetryConfig, clock: Clock, lock=None) -> None:
        self.ratio = config.budget_ratio
        self.window = config.budget_window
        self.floor = config.budget_min_retries_per_second * config.budget_window
        self._clock = clock
        self._n = max(1, math.ceil(config.budget_window))
        self._seconds = [-1] * self._n
        self._calls = [0] * self._n
        self._retries = [0] * self._n
        self._lock = lock or threading.Lock()  # a policy shares its Stats lock (one per call)
        self._shared = None  # (link, script, key prefix) once share_floor() was called

    def share_floor(self, link, prefix: str) -> None:
        """Take the floor from one count in Redis, shared by every process of the service."""
        script = link.client.register_script(_SHARED_FLOOR)
        self._shared = (link, script, prefix)

    def _bucket(self, second: int) -> int:
        """The bucket of ``second``, emptied if it held an older second; under ``_lock``."""
        i = second % self._n
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._calls[i] = self._retries[i] = 0
        return i

    def record_call(self) -> None:
        with self._lock:
            self.record_call_locked(int(self._clock.now()))

    def record_call_locked(self, second: int) -> None:
        """Count a call made in ``second`` (of the budget's clock); the caller holds the lock."""
        self._calls[self._bucket(second)] += 1

    def _in_window(self, second: int) -> tuple[int, int]:
        oldest = second - self._n
        calls = retries = 0
        for i in range(self._n):
            if self._seconds[i] > oldest:
                calls += self._calls[i]
                retries += self._retries[i]
        return calls, retries

    def try_acquire(self) -> bool:
        """Take one retry from the budget; ``False`` when it is spent."""
        second = int(self._clock.now())
        with self._lock:
            calls, retries = self._in_window(second)
            if retries < self.ratio * calls:
                self._retries[self._bucket(second)] += 1
                return True
            shared = self._shared if self._shared is not None and self._shared[0].up else None
            if shared is None:
                return self._take_local_floor(second, calls, retries)
        link, script, prefix = shared
        try:
            taken = script(keys=[prefix], args=[self._n, math.ceil(self.floor)])
        except RedisError as exc:
            link.failed("retry floor", exc)
            with self._lock:
                return self._take_local_floor(second, *self._in_window(second))
        if not taken:
            return False
        with self._lock:
            self._retries[self._bucket(second)] += 1
        return True

    def _take_local_floor(self, second: int, calls: int, retries: int) -> bool:
        """This process's own floor; under ``_lock``."""
        if retries < self.ratio * calls + self.floor:
            self._retries[self._bucket(second)] += 1
            return True
        return False

    def after_fork(self, lock) -> None:
        self._lock = lock
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seconds = [-1] * self._n
            self._calls = [0] * self._n
            self._retries = [0] * self._n
