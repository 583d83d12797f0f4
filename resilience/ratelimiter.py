"""A rate limiter: at most ``LIMIT_FOR_PERIOD`` permits per ``LIMIT_REFRESH_PERIOD`` in this process.

Resilience4j's ``AtomicRateLimiter``, under the policy's lock instead of a compare-and-set:
time is cut into cycles of ``LIMIT_REFRESH_PERIOD``, each of which brings ``LIMIT_FOR_PERIOD``
permits (unused ones do not carry over). A caller that finds none free may reserve one of a
later cycle and wait for it, if that wait fits in ``TIMEOUT_DURATION`` (and in its deadline);
reserved permits are debts that later cycles pay first, so waiters are served in order and
the rate holds however many wait. Otherwise it is refused at once with ``RateLimitedError``.

In a policy it bounds *attempts* (retries included: they are requests to the dependency too),
after the circuit breaker's verdict: an open breaker spends no permit. Per process, like the
bulkhead: N worker processes make N times the rate.
"""

import math
import threading

from resilience import metrics
from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.conf import RateLimiterConfig
from resilience.exceptions import RateLimitedError


class RateLimiter:
    def __init__(
        self,
        name: str,
        config: RateLimiterConfig,
        *,
        clock: Clock = default_clock,
        lock=None,
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.limit = config.limit_for_period
        self.period = config.limit_refresh_period
        self.timeout = config.timeout_duration
        self._lock = lock or threading.Lock()  # a policy shares its Stats lock
        self._cycle = math.floor(clock.now() / self.period)
        self._permits = self.limit  # negative: permits of later cycles already reserved
        self.stats = metrics.stats_for(name)
        self.stats.rate_limiter = self

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.limit}/{self.period:g} s>"

    @property
    def available(self) -> int:
        """Permits left in this cycle (negative: reserved ahead by waiting callers)."""
        with self._lock:
            self._refresh(self.clock.now())
            return self._permits

    def _refresh(self, now: float) -> None:
        cycle = math.floor(now / self.period)
        if cycle > self._cycle:
            self._permits = min(self._permits + (cycle - self._cycle) * self.limit, self.limit)
            self._cycle = cycle

    def reserve_locked(self, now: float, max_wait: float) -> float | None:
        """Take a permit: seconds to wait for it (0: now), or ``None`` if it cannot come within
        ``max_wait``. The caller holds the lock and counts the outcome."""
        if math.floor(now / self.period) > self._cycle:
            self._refresh(now)
        if self._permits > 0:
            self._permits -= 1
            return 0.0
        cycles_ahead = -self._permits // self.limit + 1
        wait = (self._cycle + cycles_ahead) * self.period - now
        if wait > max_wait:
            return None
        self._permits -= 1
        return wait

    def reserve(self, max_wait: float) -> float | None:
        """``reserve_locked`` now, under the lock, with its outcome counted."""
        with self._lock:
            wait = self.reserve_locked(self.clock.now(), max_wait)
            self.stats.counts[
                metrics.RATE_LIMITER_REJECTED if wait is None else metrics.RATE_LIMITER_PERMITTED
            ] += 1
        return wait

    def acquire(self, timeout: float | None = None) -> None:
        """Take a permit, waiting up to ``timeout`` (``TIMEOUT_DURATION`` by default) for one;
        ``RateLimitedError`` if none can come in that time. For use outside a policy."""
        wait = self.reserve(self.timeout if timeout is None else timeout)
        if wait is None:
            raise self.refused()
        if wait > 0:
            self.clock.sleep(wait)

    def refused(self) -> RateLimitedError:
        return RateLimitedError(
            f"rate limiter {self.name!r}: no permit of {self.limit} per {self.period:g} s "
            f"within {self.timeout:g} s",
            policy=self.name,
        )

    def after_fork(self, lock) -> None:
        """In a child process: full permits of its own (the parent's reservations are the
        parent's), like the bulkhead's slots."""
        self._lock = lock
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._cycle = math.floor(self.clock.now() / self.period)
            self._permits = self.limit
