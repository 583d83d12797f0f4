"""A circuit breaker on pybreaker's state machine, storage and listeners, made right where pybreaker is not.

pybreaker's ``CircuitBreaker.call`` holds one lock for the whole guarded call, counts only
consecutive failures, lets every waiting caller into half-open, counts an excluded error as
a success and reads the wall clock. This breaker keeps pybreaker's states, storages and
listener protocol and replaces the call path:

- no lock is held while the guarded function runs;
- it trips on the failure rate and the slow-call rate over a count-based sliding window,
  once ``MINIMUM_NUMBER_OF_CALLS`` are recorded;
- after ``WAIT_DURATION_IN_OPEN_STATE`` it admits exactly ``PERMITTED_CALLS_IN_HALF_OPEN_STATE``
  trial calls, across processes when the storage is Redis, and decides on their failure rate;
- ignored outcomes (4xx answers, ``BusinessError``, ``IGNORE_EXCEPTIONS``) count neither way;
- time comes from an injectable monotonic clock; ``BaseException``s that are not
  ``Exception``s (``KeyboardInterrupt``, ``SystemExit``) pass through without being counted.
"""

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker

from resilience import metrics
from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.conf import BreakerConfig
from resilience.exceptions import BusinessError, CircuitOpenError, UpstreamStatusError
from resilience.storage import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    NORMAL,
    OPEN,
    build_storage,
)

logger = logging.getLogger("resilience.breaker")
T = TypeVar("T")

# What ``acquire`` hands out: how the call was let through and in which epoch (state period),
# so that its outcome lands in the right place or, if the state has moved on, nowhere.
PERMIT_CLOSED = "closed"
PERMIT_TRIAL = "trial"
PERMIT_DISABLED = "disabled"
Permit = tuple[str, int]

SUCCESS = "success"
FAILURE = "failure"
IGNORED = "ignored"


class SlidingWindow:
    """The outcomes of the last ``size`` calls, with running counts of failures and slow calls."""

    def __init__(self, size: int) -> None:
        self._outcomes: collections.deque[tuple[bool, bool]] = collections.deque(maxlen=size)
        self._failures = 0
        self._slow = 0
        self._lock = threading.Lock()

    def record(self, failed: bool, slow: bool) -> tuple[int, float, float]:
        """Add an outcome; the number of calls recorded, failure rate and slow rate in percent."""
        with self._lock:
            if len(self._outcomes) == self._outcomes.maxlen:
                old_failed, old_slow = self._outcomes[0]
                self._failures -= old_failed
                self._slow -= old_slow
            self._outcomes.append((failed, slow))
            self._failures += failed
            self._slow += slow
            n = len(self._outcomes)
            return n, 100.0 * self._failures / n, 100.0 * self._slow / n

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()
            self._failures = self._slow = 0


class _Machine(pybreaker.CircuitBreaker):
    """pybreaker's breaker, used for its state objects, storage and listener notifications only."""

    def call(self, func, *args, **kwargs):  # pragma: no cover - guarded against misuse
        raise TypeError("call through resilience.breaker.CircuitBreaker, not its pybreaker core")


class _Observer(pybreaker.CircuitBreakerListener):
    """Keeps this process's window and state gauge in step with every state change it sees."""

    def __init__(self, breaker: "CircuitBreaker") -> None:
        self.breaker = breaker

    def state_change(self, cb, old_state, new_state) -> None:
        self.breaker.window.clear()
        metrics.set_state(self.breaker.name, new_state.name)
        metrics.breaker_failure_rate.labels(self.breaker.name).set(-1)
        metrics.breaker_slow_call_rate.labels(self.breaker.name).set(-1)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock = default_clock,
        namespace: str = "resilience",
        listeners: tuple[pybreaker.CircuitBreakerListener, ...] = (),
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.window = SlidingWindow(config.sliding_window_size)
        self.storage = build_storage(config.storage, namespace=f"{namespace}:{name}", clock=clock)
        self._sync_lock = threading.Lock()
        self._machine = _Machine(
            name=name,
            state_storage=self.storage,
            reset_timeout=config.wait_duration_in_open_state,
            exclude=list(config.ignore_exceptions),
            listeners=[_Observer(self), *listeners],
        )
        self._calls = {
            kind: metrics.breaker_calls.labels(name, kind)
            for kind in (
                "successful",
                "failed",
                "slow_successful",
                "slow_failed",
                "ignored",
                "not_permitted",
            )
        }
        self._failure_rate = metrics.breaker_failure_rate.labels(name)
        self._slow_call_rate = metrics.breaker_slow_call_rate.labels(name)
        self._failure_rate.set(-1)
        self._slow_call_rate.set(-1)
        self._seen, _, self._seen_epoch = self.storage.snapshot()
        metrics.set_state(name, self._seen)

    # -- state -----------------------------------------------------------------------------

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, as the storage has it now."""
        state, _, epoch = self.storage.snapshot()
        self._sync(state, epoch)
        return state

    @property
    def mode(self) -> str:
        """``"normal"``, ``"forced-open"`` (operator) or ``"disabled"`` (every call passes, none counted)."""
        return self.storage.snapshot()[1]

    def add_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        """A pybreaker listener: ``state_change(cb, old, new)`` for every change this process sees."""
        self._machine.add_listener(listener)

    def _sync(self, state: str, epoch: int) -> None:
        """Bring pybreaker's cached state in line with storage, notifying listeners of a change.

        Only a newer epoch moves it: a snapshot read before a transition cannot rewind it.
        """
        if epoch <= self._seen_epoch:
            return
        with self._sync_lock:
            if epoch <= self._seen_epoch:
                return
            changed = state != self._seen
            self._seen, self._seen_epoch = state, epoch
            self.window.clear()
            if changed:
                self._machine.state = state

    def _transition(self, expected: str | None, new: str, *, reason: str) -> int:
        """Make a transition in storage (compare-and-set): its epoch, or 0 if it did not happen."""
        wait = self.config.wait_duration_in_open_state
        old = expected or self._seen
        epoch = self.storage.transition(expected, new, wait=wait)
        if not epoch:
            return 0
        self._sync(new, epoch)
        metrics.breaker_transitions.labels(self.name, old, new).inc()
        logger.warning("circuit breaker %r: %s -> %s (%s)", self.name, old, new, reason)
        return epoch

    # -- manual control ----------------------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until ``force_closed`` or ``reset``, whatever the outcomes."""
        self.storage.set_mode(FORCED_OPEN)
        self._transition(None, OPEN, reason="forced open")

    def force_closed(self) -> None:
        """Close now and start counting afresh."""
        self.storage.set_mode(NORMAL)
        self._transition(None, CLOSED, reason="forced closed")
        self.window.clear()
        self._failure_rate.set(-1)
        self._slow_call_rate.set(-1)

    def disable(self) -> None:
        """Let every call through and count none, until ``force_closed`` or ``reset``."""
        self.storage.set_mode(DISABLED)
        logger.warning("circuit breaker %r disabled", self.name)

    def reset(self) -> None:
        """Closed, normal mode, empty window: as if just built."""
        self.storage.clear()
        self.window.clear()
        state, _, epoch = self.storage.snapshot()
        self._sync(state, epoch)
        self._failure_rate.set(-1)
        self._slow_call_rate.set(-1)

    # -- calls ---------------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """Permission for one call, or ``CircuitOpenError``. Hand the permit back to ``record``."""
        state, mode, epoch = self.storage.snapshot()
        self._sync(state, epoch)
        if mode == DISABLED:
            return PERMIT_DISABLED, epoch
        if mode != FORCED_OPEN:
            if state == CLOSED:
                return PERMIT_CLOSED, epoch
            if state == OPEN:
                moved = self._transition(OPEN, HALF_OPEN, reason="open wait over")
                if moved:
                    state, epoch = HALF_OPEN, moved
                else:  # still waiting, or another caller moved it first
                    state, _, epoch = self.storage.snapshot()
                    self._sync(state, epoch)
            if state == HALF_OPEN:
                permitted = self.config.permitted_calls_in_half_open_state
                if self.storage.acquire_trial(permitted, epoch):
                    return PERMIT_TRIAL, epoch
                # Trials that never report back (their process died) must not wedge it here.
                restarted = self._transition(
                    HALF_OPEN, HALF_OPEN, reason="trial calls did not report back"
                )
                if restarted and self.storage.acquire_trial(permitted, restarted):
                    return PERMIT_TRIAL, restarted
            elif state == CLOSED:
                return PERMIT_CLOSED, epoch
        self._calls["not_permitted"].inc()
        raise CircuitOpenError(f"circuit breaker {self.name!r} is {state}", policy=self.name)

    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, (BusinessError, *self.config.ignore_exceptions)):
            return IGNORED
        if isinstance(exc, UpstreamStatusError) and (exc.status_code or 500) < 500:
            return IGNORED  # a 429 is retried, but a 4xx never counts against the dependency
        return FAILURE

    def record(self, permit: Permit, outcome: str, duration: float) -> None:
        """Count the outcome of a call let through by ``acquire``."""
        kind, epoch = permit
        if kind == PERMIT_DISABLED:
            return
        slow = duration >= self.config.slow_call_duration
        if outcome == IGNORED:
            self._calls["ignored"].inc()
            self.release(permit)
            return
        failed = outcome == FAILURE
        self._calls[("slow_" if slow else "") + ("failed" if failed else "successful")].inc()
        if kind == PERMIT_TRIAL:
            self._record_trial(failed, slow, epoch)
        elif epoch == self._seen_epoch and self._seen == CLOSED:
            self._record_closed(failed, slow)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without an outcome (``KeyboardInterrupt`` and the like)."""
        kind, epoch = permit
        if kind == PERMIT_TRIAL:
            self.storage.release_trial(epoch)

    def _record_closed(self, failed: bool, slow: bool) -> None:
        cfg = self.config
        n, failure_rate, slow_rate = self.window.record(failed, slow)
        if n < cfg.minimum_number_of_calls:
            return
        self._failure_rate.set(failure_rate)
        self._slow_call_rate.set(slow_rate)
        if failure_rate >= cfg.failure_rate_threshold:
            self._transition(CLOSED, OPEN, reason=f"failure rate {failure_rate:.0f}% of {n} calls")
        elif slow_rate >= cfg.slow_call_rate_threshold:
            self._transition(CLOSED, OPEN, reason=f"slow-call rate {slow_rate:.0f}% of {n} calls")

    def _record_trial(self, failed: bool, slow: bool, epoch: int) -> None:
        cfg = self.config
        tally = self.storage.record_trial(failed, slow, epoch)
        if tally is None or tally[0] < cfg.permitted_calls_in_half_open_state:
            return
        done, failures, slows = tally
        failure_rate, slow_rate = 100.0 * failures / done, 100.0 * slows / done
        if failure_rate >= cfg.failure_rate_threshold or slow_rate >= cfg.slow_call_rate_threshold:
            self._transition(
                HALF_OPEN, OPEN, reason=f"{failures} of {done} trial calls failed, {slows} slow"
            )
        else:
            self._transition(
                HALF_OPEN, CLOSED, reason=f"{done - failures} of {done} trial calls succeeded"
            )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` through the breaker: ``CircuitOpenError`` if not permitted, else its result."""
        permit = self.acquire()
        start = self.clock.now()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self.record(permit, self.classify(exc), self.clock.now() - start)
            raise
        except BaseException:
            self.release(permit)
            raise
        self.record(permit, SUCCESS, self.clock.now() - start)
        return result
