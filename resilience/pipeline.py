"""A named policy: bulkhead -> deadline -> retry -> circuit breaker -> rate limiter -> the attempt,
fallback around it.

The call path is written for speed as much as for reading: plain ``try``/``finally`` instead
of context managers, one lock per call to free the bulkhead slot and count the outcome, and
no Prometheus update on the way (``resilience.metrics``). docs/benchmarks.md has the figures.
"""

import random
from collections.abc import Callable
from typing import Any, TypeVar

from resilience import metrics, signals
from resilience.breaker import FAILURE, SUCCESS, CircuitBreaker
from resilience.bulkhead import Bulkhead
from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.conf import PolicyConfig
from resilience.deadline import Deadline, _current
from resilience.exceptions import (
    BusinessError,
    CircuitOpenError,
    DeadlineExceededError,
    OverloadedError,
    UpstreamTimeoutError,
)
from resilience.ratelimiter import RateLimiter
from resilience.retry import RetryBudget, backoff, is_transient
from resilience.storage import LinkOptions
from resilience.throttle import AdaptiveThrottle

T = TypeVar("T")

_BULKHEAD_PERMITTED = metrics.BULKHEAD_PERMITTED
_SUCCESS = metrics.SUCCESS
_RETRY_OK = (metrics.RETRY_SUCCESSFUL_WITHOUT, metrics.RETRY_SUCCESSFUL_WITH)
_RETRY_GAVE_UP = (metrics.RETRY_FAILED_WITHOUT, metrics.RETRY_FAILED_WITH)
_bucket = metrics.Stats.bucket


class Policy:
    def __init__(
        self,
        config: PolicyConfig,
        *,
        clock: Clock = default_clock,
        namespace: str = "resilience",
        rng: random.Random | None = None,
        storage_options: LinkOptions | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.clock = clock
        self.stats = metrics.stats_for(config.name)
        metrics.describe_policy(config)
        self.bulkhead = Bulkhead(
            config.name, config.bulkhead.max_concurrent_calls, config.bulkhead.max_wait
        )
        self.breaker = CircuitBreaker(
            config.name,
            config.circuit_breaker,
            clock=clock,
            namespace=namespace,
            storage_options=storage_options,
        )
        self.retry_budget = RetryBudget(config.retry, clock, lock=self.stats.lock)
        self.stats.budget = self.retry_budget
        if self.breaker.state.shared:
            self.retry_budget.share_floor(
                self.breaker.state.link, f"{namespace}:{config.name}:retry-floor"
            )
        self.rate_limiter = (
            None
            if config.rate_limiter is None
            else RateLimiter(config.name, config.rate_limiter, clock=clock, lock=self.stats.lock)
        )
        self._rng = rng or random.Random()
        self.throttle = (
            None
            if config.throttle_k is None
            else AdaptiveThrottle(config.throttle_k, self.retry_budget, rng=self._rng)
        )
        self.stats.throttle = self.throttle
        self._enabled = config.enabled
        self._deadline = config.deadline
        self._least = config.timeout.minimum_time_left
        self._retry_on = config.retry.retry_on_exceptions
        self._retry_on_result = config.retry.retry_on_result
        self._record_on_result = config.circuit_breaker.record_failure_on_result

    def __repr__(self) -> str:
        return f"<Policy {self.name!r} enabled={self.config.enabled}>"

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def call(
        self,
        fn: Callable[..., T],
        /,
        *,
        idempotent: bool,
        fallback: Callable[[Exception], T] | None = None,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
    ) -> T:
        """Call ``fn(*args, **kwargs)`` under this policy.

        ``idempotent`` has no default: ``True`` lets a failed attempt be retried, so ``fn`` may
        run more than once; ``False`` allows one attempt only. ``fallback(exc)`` answers
        instead when the call fails for any reason but a ``BusinessError`` (or an exception the
        breaker ignores). ``fn``'s own arguments go in ``args`` and ``kwargs``, so that none of
        its keywords is taken for one of the policy's (``threading.Thread`` does the same).

        Plain Python code cannot be interrupted: an attempt runs as long as ``fn`` does. What
        the policy can do, it does: an answer that comes after the deadline is refused with
        ``DeadlineExceededError`` (the work was done: make it idempotent), and a slow attempt
        counts towards the breaker's slow-call rate. Code that does I/O can bound it itself
        with ``resilience.deadline.remaining()``, as ``ServiceClient`` does.
        """
        return self.run(
            fn, args, kwargs or {}, fallback=fallback, idempotent=idempotent, bounded=False
        )

    def run(
        self,
        fn: Callable[..., T],
        args: tuple,
        kwargs: dict,
        *,
        idempotent: bool,
        fallback: Callable[[Exception], T] | None = None,
        bounded: bool = True,
    ) -> T:
        """``call`` for an ``fn`` that bounds each attempt by the deadline itself (``bounded``),
        like ``ServiceClient``'s: its answer is taken whenever it comes."""
        if not self._enabled:
            return fn(*args, **kwargs)
        clock = self.clock
        start = clock.now()
        expires = start + self._deadline
        outer = _current.get()
        token = None
        bulkhead = self.bulkhead
        stats = self.stats
        with stats.lock:  # the bulkhead's and the retry budget's lock too: one for both
            entered = bulkhead.in_flight < bulkhead.max_concurrent_calls
            if entered:
                bulkhead.in_flight += 1
                self.retry_budget.record_call_locked(int(start))
        if not entered:
            # The wait for a slot counts inside the deadline (and inside one already in force).
            limit = expires if outer is None else min(expires, outer.expires_at)
            if not bulkhead.enter(min(bulkhead.max_wait, limit - start)):
                stats.add(metrics.BULKHEAD_REJECTED)
                full = bulkhead.full()
                self._rejected("bulkhead_full", full)
                return self._failed(full, fallback, start)
            self.retry_budget.record_call()
        try:
            throttle = self.throttle
            if throttle is not None and int(start) - throttle.last_refusal < throttle.window_seconds:
                self._hold_back(int(start))  # a dependency refused for overload lately
            if outer is None or outer.expires_at > expires:
                token = _current.set(Deadline(expires, clock))
            else:
                expires = outer.expires_at
            result, breaker_slot, attempts = self._attempts(
                fn, args, kwargs, expires, idempotent, bounded
            )
        except BaseException as exc:
            if token is not None:
                _current.reset(token)
            with stats.lock:
                bulkhead.left_locked()
                stats.counts[_BULKHEAD_PERMITTED] += 1
            if isinstance(exc, Exception):
                return self._failed(exc, fallback, start)
            raise
        if token is not None:
            _current.reset(token)
        elapsed = clock.now() - start
        with stats.lock:
            bulkhead.left_locked()
            counts = stats.counts
            counts[_BULKHEAD_PERMITTED] += 1
            if breaker_slot >= 0:  # -1: a disabled breaker, which counts nothing
                counts[breaker_slot] += 1
            if attempts > 0:
                counts[_RETRY_OK[attempts > 1]] += 1
            else:  # RETRY_ON_RESULT wanted another attempt, and none was left
                counts[_RETRY_GAVE_UP[attempts < -1]] += 1
            stats.durations[_SUCCESS][_bucket(elapsed)] += 1
            stats.duration_sums[_SUCCESS] += elapsed
        return result

    def _failed(self, exc: Exception, fallback, start: float):
        elapsed = self.clock.now() - start
        if isinstance(exc, (BusinessError, *self.config.circuit_breaker.ignore_exceptions)):
            self.stats.observe(metrics.IGNORED, elapsed)
            raise exc
        if fallback is None:
            self.stats.observe(metrics.FAILURE, elapsed)
            raise exc
        stats = self.stats
        stats.observe(metrics.FALLBACK, elapsed)
        reason = metrics.reason(exc)
        with stats.lock:
            stats.fallbacks[reason] += 1
        signals.fallback.send_robust(Policy, policy=self.name, reason=reason, exception=exc)
        return fallback(exc)

    def _rejected(self, reason: str, exc: Exception) -> None:
        signals.rejected.send_robust(Policy, policy=self.name, reason=reason, exception=exc)

    def _attempts(self, fn, args, kwargs, expires: float, idempotent: bool, bounded: bool):
        """(result, the breaker's outcome slot, attempts made), or the exception that ended it.
        Attempts are negative when the result is one ``RETRY_ON_RESULT`` still wanted retried."""
        clock = self.clock
        breaker = self.breaker
        stats = self.stats
        attempt = 1
        while True:
            began = clock.now()
            if began >= expires or expires - began < self._least:
                self._count_failure(attempt, metrics.TIMEOUT_DEADLINE)
                raise DeadlineExceededError(
                    f"{self.name}: {max(0.0, expires - began) * 1000:.0f} ms of the deadline left "
                    f"after {attempt - 1} attempt(s), less than TIMEOUT.MINIMUM_TIME_LEFT "
                    f"({self._least * 1000:.0f} ms): no attempt started",
                    policy=self.name,
                )
            try:
                permit = breaker.acquire()
            except CircuitOpenError as exc:
                self._count_failure(attempt)
                self._rejected("circuit_open", exc)
                raise
            if self.rate_limiter is not None and self._take_permit(permit, attempt, expires):
                began = clock.now()  # the wait for a permit is not the dependency's time
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                ended = clock.now()
                slot = breaker.record(permit, breaker.classify(exc), ended - began)
                if slot >= 0:
                    stats.add(slot)
                if isinstance(exc, UpstreamTimeoutError):
                    stats.add(metrics.TIMEOUT_ATTEMPT)
                elif isinstance(exc, OverloadedError):
                    # In the second the attempt began, where its call was counted: a refusal
                    # counted a second later would outlive its request in the window.
                    self._refused_for_overload(int(began))
                if isinstance(exc, DeadlineExceededError):
                    self._count_failure(attempt, metrics.TIMEOUT_DEADLINE)
                    raise
                transient = not isinstance(exc, BusinessError) and is_transient(exc, self._retry_on)
                if ended >= expires and transient:
                    self._count_failure(attempt, metrics.TIMEOUT_DEADLINE)
                    raise DeadlineExceededError(
                        f"{self.name}: deadline of {self.config.deadline:g} s spent after "
                        f"{attempt} attempt(s): {exc}",
                        policy=self.name,
                    ) from exc
                delay = self._next_delay(exc, transient, attempt, expires - ended, idempotent)
                if delay is None:
                    if not isinstance(exc, BusinessError):  # an answer, not a failed call
                        self._count_failure(attempt)
                    raise
                self._before_retry(attempt, delay, exc, None)
                attempt += 1
                continue
            except BaseException:
                breaker.release(permit)
                raise
            ended = clock.now()
            outcome = SUCCESS
            if self._record_on_result is not None:
                try:
                    if self._record_on_result(result):
                        outcome = FAILURE
                except BaseException:
                    breaker.release(permit)  # a broken predicate must not keep a trial permit
                    raise
            slot = breaker.record(permit, outcome, ended - began)
            gave_up = False
            if self._retry_on_result is not None and self._retry_on_result(result):
                delay = self._next_delay(None, True, attempt, expires - ended, idempotent)
                if delay is not None:
                    if slot >= 0:
                        stats.add(slot)
                    self._before_retry(attempt, delay, None, result)
                    attempt += 1
                    continue
                # No attempt left for a better answer: the last one is the call's (as in
                # resilience4j), and the call counts as failed.
                gave_up = True
            if not bounded and ended > expires:
                # Plain code answered after the deadline: the caller has stopped waiting.
                if slot >= 0:
                    stats.add(slot)
                self._count_failure(attempt, metrics.TIMEOUT_DEADLINE)
                raise DeadlineExceededError(
                    f"{self.name}: answered {ended - began:.3f} s after the attempt began, "
                    f"past the deadline",
                    policy=self.name,
                )
            return result, slot, -attempt if gave_up else attempt

    def _hold_back(self, second: int) -> None:
        """Adaptive throttling: ``OverloadedError`` for a call held back here, else nothing."""
        stats = self.stats
        with stats.lock:
            held = self.throttle.hold_back_locked(second)
            if held:
                stats.counts[metrics.OVERLOAD_BY_THROTTLE] += 1
                probability = self.throttle.probability_locked(second)
        if held:
            self._count_failure(1)
            exc = OverloadedError(
                f"{self.name}: held back by adaptive throttling: the dependency refused calls "
                f"for overload lately (now holding back {probability:.0%})",
                policy=self.name,
            )
            self._rejected("throttled", exc)
            raise exc

    def _refused_for_overload(self, second: int) -> None:
        stats = self.stats
        with stats.lock:
            stats.counts[metrics.OVERLOAD_BY_DEPENDENCY] += 1
            if self.throttle is not None:
                self.throttle.refused_locked(second)

    def _before_retry(self, attempt: int, delay: float, exc: Exception | None, result) -> None:
        """Count the retry, tell the signal's receivers, and wait the backoff."""
        self.stats.add(metrics.RETRY_ATTEMPTS)
        signals.retry.send_robust(
            Policy, policy=self.name, attempt=attempt, delay=delay, exception=exc, result=result
        )
        self.clock.sleep(delay)

    def _take_permit(self, permit, attempt: int, expires: float) -> float:
        """A permit of the rate limiter for this attempt, waiting for it within the deadline
        (and leaving the attempt its minimum time): the seconds waited. ``RateLimitedError``
        without one."""
        limiter = self.rate_limiter
        wait = limiter.reserve(min(limiter.timeout, expires - self.clock.now() - self._least))
        if wait is None:
            self.breaker.release(permit)
            self._count_failure(attempt)
            refused = limiter.refused()
            self._rejected("rate_limited", refused)
            raise refused
        if wait > 0:
            try:
                self.clock.sleep(wait)
            except BaseException:  # interrupted (KeyboardInterrupt, a gevent timeout)
                self.breaker.release(permit)
                raise
        return wait

    def _count_failure(self, attempts: int, extra: int | None = None) -> None:
        stats = self.stats
        with stats.lock:
            counts = stats.counts
            counts[metrics.RETRY_FAILED_WITH if attempts > 1 else metrics.RETRY_FAILED_WITHOUT] += 1
            if extra is not None:
                counts[extra] += 1

    def _next_delay(
        self, exc: Exception | None, transient: bool, attempt: int, left: float, idempotent: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when there must not be one."""
        cfg = self.config.retry
        if not idempotent or attempt >= cfg.max_attempts or not transient:
            return None
        delay = backoff(cfg, attempt, self._rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay + self._least >= left:
            return None  # the next attempt could not start with its minimum time left
        if not self.retry_budget.try_acquire():
            self.stats.add(metrics.RETRY_BUDGET_EXHAUSTED)
            return None
        return delay

    def reset(self) -> None:
        """Forget all state: breaker closed and empty, retry budget and rate limiter full."""
        self.breaker.reset()
        self.retry_budget.reset()
        if self.throttle is not None:
            with self.stats.lock:
                self.throttle.reset()
        if self.rate_limiter is not None:
            self.rate_limiter.reset()

    def close(self) -> None:
        """Stop sharing breaker state (a policy that is thrown away)."""
        self.breaker.close()
