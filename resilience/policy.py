"""A named policy: bulkhead -> deadline -> retry -> circuit breaker -> the attempt, fallback around it."""

import random
from collections.abc import Callable
from typing import Any, TypeVar

from resilience import deadline as deadlines
from resilience import metrics
from resilience.breaker import CircuitBreaker
from resilience.bulkhead import Bulkhead
from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.conf import BASELINE_TIMEOUT, PolicyConfig
from resilience.exceptions import (
    BusinessError,
    DeadlineExceededError,
    UpstreamTimeoutError,
)
from resilience.retry import RetryBudget, backoff, is_transient

T = TypeVar("T")


class Policy:
    def __init__(
        self,
        config: PolicyConfig,
        *,
        clock: Clock = default_clock,
        namespace: str = "resilience",
        rng: random.Random | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.clock = clock
        self.bulkhead = Bulkhead(
            config.name, config.bulkhead.max_concurrent_calls, config.bulkhead.max_wait
        )
        self.breaker = CircuitBreaker(
            config.name, config.circuit_breaker, clock=clock, namespace=namespace
        )
        self.retry_budget = RetryBudget(config.retry, clock)
        self._rng = rng or random.Random()
        self._durations = {
            outcome: metrics.call_duration.labels(self.name, outcome)
            for outcome in ("success", "failure", "fallback", "ignored")
        }
        self._retry_outcomes = {
            kind: metrics.retry_calls.labels(self.name, kind)
            for kind in (
                "successful_without_retry",
                "successful_with_retry",
                "failed_without_retry",
                "failed_with_retry",
            )
        }

    def __repr__(self) -> str:
        return f"<Policy {self.name!r} enabled={self.config.enabled}>"

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def attempt_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for one attempt, each capped by the deadline in force."""
        if not self.enabled:
            return BASELINE_TIMEOUT, BASELINE_TIMEOUT
        connect, read = self.config.timeout.connect, self.config.timeout.read
        current = deadlines.current()
        if current is not None:
            left = current.check(self.name)
            connect, read = min(connect, left), min(read, left)
        return connect, read

    def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[Exception], T] | None = None,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> T:
        """Call ``fn(*args, **kwargs)`` under this policy.

        ``fallback(exc)`` answers instead when the call fails for any reason but a
        ``BusinessError`` (or an exception the breaker ignores). ``idempotent=False`` allows
        one attempt only.
        """
        if not self.enabled:
            return fn(*args, **kwargs)
        start = self.clock.now()
        # A caller's deadline bounds the wait for a bulkhead slot too.
        inbound = deadlines.remaining()
        wait = self.bulkhead.max_wait
        if inbound is not None:
            wait = max(0.0, min(wait, inbound))
        try:
            with (
                self.bulkhead.acquire(wait),
                deadlines.scope(self.config.deadline, clock=self.clock) as dl,
            ):
                result = self._retrying(fn, args, kwargs, dl, idempotent)
        except Exception as exc:
            elapsed = self.clock.now() - start
            if isinstance(exc, (BusinessError, *self.config.circuit_breaker.ignore_exceptions)):
                self._durations["ignored"].observe(elapsed)
                raise
            if fallback is None:
                self._durations["failure"].observe(elapsed)
                raise
            self._durations["fallback"].observe(elapsed)
            metrics.fallback_calls.labels(self.name, metrics.reason(exc)).inc()
            return fallback(exc)
        self._durations["success"].observe(self.clock.now() - start)
        return result

    def _retrying(self, fn, args, kwargs, dl: deadlines.Deadline, idempotent: bool):
        self.retry_budget.record_call()
        attempt = 1
        while True:
            try:
                dl.check(self.name)
                result = self.breaker.call(fn, *args, **kwargs)
            except Exception as exc:
                if isinstance(exc, UpstreamTimeoutError):
                    metrics.timeouts.labels(self.name, "attempt").inc()
                if isinstance(exc, DeadlineExceededError) or (
                    dl.expired and not isinstance(exc, BusinessError) and is_transient(exc)
                ):
                    metrics.timeouts.labels(self.name, "deadline").inc()
                    self._count(attempt, ok=False)
                    if isinstance(exc, DeadlineExceededError):
                        raise
                    raise DeadlineExceededError(
                        f"{self.name}: deadline of {self.config.deadline:g} s spent after "
                        f"{attempt} attempt(s): {exc}",
                        policy=self.name,
                    ) from exc
                delay = self._next_delay(exc, attempt, dl, idempotent)
                if delay is None:
                    if not isinstance(exc, BusinessError):  # an answer, not a failed call
                        self._count(attempt, ok=False)
                    raise
                metrics.retry_attempts.labels(self.name).inc()
                self.clock.sleep(delay)
                attempt += 1
            else:
                self._count(attempt, ok=True)
                return result

    def _next_delay(
        self, exc: Exception, attempt: int, dl: deadlines.Deadline, idempotent: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when there must not be one."""
        cfg = self.config.retry
        if not idempotent or attempt >= cfg.max_attempts or not is_transient(exc):
            return None
        delay = backoff(cfg, attempt, self._rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay >= dl.remaining():
            return None  # the next attempt could not start before the deadline
        if not self.retry_budget.try_acquire():
            metrics.retry_budget_exhausted.labels(self.name).inc()
            return None
        return delay

    def _count(self, attempts: int, *, ok: bool) -> None:
        kind = ("successful" if ok else "failed") + (
            "_with_retry" if attempts > 1 else "_without_retry"
        )
        self._retry_outcomes[kind].inc()

    def reset(self) -> None:
        """Forget all state: breaker closed and empty, retry budget full."""
        self.breaker.reset()
        self.retry_budget.reset()
