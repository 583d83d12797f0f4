"""A circuit breaker that never serialises the calls through it, on a state kept by ``storage``.

- No lock is held while the guarded function runs, and a call through a closed breaker reads
  one tuple of this process's state: no lock, no I/O (also with Redis storage).
- It trips on the failure rate and the slow-call rate over a sliding window of this process's
  calls, the last ``SLIDING_WINDOW_SIZE`` calls (``COUNT_BASED``) or the calls of the last
  ``SLIDING_WINDOW_SIZE`` seconds (``TIME_BASED``), once ``MINIMUM_NUMBER_OF_CALLS`` are recorded.
- After ``WAIT_DURATION_IN_OPEN_STATE`` it admits exactly ``PERMITTED_CALLS_IN_HALF_OPEN_STATE``
  trial calls, across processes when the storage is Redis, and decides on their rates.
- Ignored outcomes (4xx answers, ``BusinessError``, ``IGNORE_EXCEPTIONS``, an attempt cut short
  by the caller's deadline) count neither way and give a trial permit back.
- Time comes from an injectable monotonic clock; ``BaseException``s that are not
  ``Exception``s (``KeyboardInterrupt``, ``SystemExit``) pass through without being counted.

Why not pybreaker, which this app was first built on: its ``call`` holds one lock around the
guarded call, it counts consecutive failures only, and its state objects write pybreaker's
counters to their storage whenever they are created, which with Redis meant a write on the
caller's thread for every transition any process observed. What remained of it was three
state names; docs/resilience.md has the details.
"""

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from resilience import metrics
from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.conf import TIME_BASED, BreakerConfig
from resilience.exceptions import (
    BusinessError,
    CircuitOpenError,
    DeadlineExceededError,
    OverloadedError,
    UpstreamStatusError,
)
from resilience.storage import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    NORMAL,
    OPEN,
    LinkOptions,
    build_state,
)

logger = logging.getLogger("resilience.breaker")
T = TypeVar("T")

# What ``acquire`` hands out: (how the call was let through, the generation of this process's
# view it was let through in, the shared epoch of a trial permit taken in Redis or 0), so that
# its outcome lands in the right place or, if the state has moved on, nowhere.
PERMIT_CLOSED = "closed"
PERMIT_TRIAL = "trial"
PERMIT_DISABLED = "disabled"
Permit = tuple[str, int, int]

SUCCESS = "success"
FAILURE = "failure"
IGNORED = "ignored"


class SlidingWindow:
    """The outcomes of the last ``size`` calls of one generation, with running counts."""

    def __init__(self, size: int) -> None:
        self._outcomes: collections.deque[tuple[bool, bool]] = collections.deque(maxlen=size)
        self._size = size
        self._full_and_clean = (size, 0.0, 0.0)
        self._failures = 0
        self._slow = 0
        self._generation = 0
        self._lock = threading.Lock()

    def record(self, generation: int, failed: bool, slow: bool) -> tuple[int, float, float] | None:
        """Add an outcome of ``generation``: (calls recorded, failure %, slow %), or ``None`` if
        the window has moved on to a later generation. A new generation starts it empty."""
        if (
            not (failed or slow or self._failures or self._slow)
            and generation == self._generation
            and len(self._outcomes) == self._size
        ):
            # A success into a full window of successes changes nothing. Read without the lock:
            # a failure recorded meanwhile is as if recorded just after this success.
            return self._full_and_clean
        with self._lock:
            if generation != self._generation:
                if generation < self._generation:
                    return None
                self._generation = generation
                self._outcomes.clear()
                self._failures = self._slow = 0
            outcomes = self._outcomes
            if len(outcomes) == outcomes.maxlen:
                old_failed, old_slow = outcomes[0]
                self._failures -= old_failed
                self._slow -= old_slow
            outcomes.append((failed, slow))
            self._failures += failed
            self._slow += slow
            n = len(outcomes)
            return n, 100.0 * self._failures / n, 100.0 * self._slow / n

    def rates(self, generation: int) -> tuple[int, float, float]:
        with self._lock:
            n = len(self._outcomes) if generation == self._generation else 0
            if not n:
                return 0, 0.0, 0.0
            return n, 100.0 * self._failures / n, 100.0 * self._slow / n

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()
            self._failures = self._slow = 0


class TimeSlidingWindow:
    """The outcomes of the last ``size`` seconds of one generation, in one bucket per second
    (resilience4j's time-based window): a bucket is emptied when its second comes round again."""

    def __init__(self, size: int, clock: Clock) -> None:
        self._size = size
        self._clock = clock
        self._seconds = [-1] * size
        self._calls = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size
        self._totals = [0, 0, 0]  # calls, failures, slow calls in the window
        self._head = -1  # the latest second recorded
        self._generation = 0
        self._lock = threading.Lock()

    def _advance(self, second: int) -> None:
        """Empty the buckets of the seconds that left the window by ``second``; under the lock."""
        if second <= self._head:
            return
        totals = self._totals
        for each in range(max(self._head + 1, second - self._size + 1), second + 1):
            i = each % self._size
            if self._seconds[i] != -1:
                totals[0] -= self._calls[i]
                totals[1] -= self._failed[i]
                totals[2] -= self._slow[i]
            self._seconds[i] = each
            self._calls[i] = self._failed[i] = self._slow[i] = 0
        self._head = second

    def record(self, generation: int, failed: bool, slow: bool) -> tuple[int, float, float] | None:
        """Add an outcome now: (calls in the window, failure %, slow %), or ``None`` if the window
        has moved on to a later generation. A new generation starts it empty."""
        second = int(self._clock.now())
        with self._lock:
            if generation != self._generation:
                if generation < self._generation:
                    return None
                self._generation = generation
                self._clear()
            self._advance(second)
            i = second % self._size
            self._calls[i] += 1
            self._failed[i] += failed
            self._slow[i] += slow
            totals = self._totals
            totals[0] += 1
            totals[1] += failed
            totals[2] += slow
            n = totals[0]
            return n, 100.0 * totals[1] / n, 100.0 * totals[2] / n

    def rates(self, generation: int) -> tuple[int, float, float]:
        with self._lock:
            if generation != self._generation:
                return 0, 0.0, 0.0
            self._advance(int(self._clock.now()))
            n, failures, slow = self._totals
            if not n:
                return 0, 0.0, 0.0
            return n, 100.0 * failures / n, 100.0 * slow / n

    def _clear(self) -> None:
        self._seconds = [-1] * self._size
        self._calls = [0] * self._size
        self._failed = [0] * self._size
        self._slow = [0] * self._size
        self._totals = [0, 0, 0]
        self._head = -1

    def clear(self) -> None:
        with self._lock:
            self._clear()


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock = default_clock,
        namespace: str = "resilience",
        storage_options: LinkOptions | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.window = (
            TimeSlidingWindow(config.sliding_window_size, clock)
            if config.sliding_window_type == TIME_BASED
            else SlidingWindow(config.sliding_window_size)
        )
        self._listeners: list[Callable[[CircuitBreaker, str, str], None]] = []
        self.stats = metrics.stats_for(name)
        self.stats.breaker = self
        metrics.set_state(name, CLOSED, changed=False)  # not a transition: dated before any
        self.state = build_state(
            config.storage,
            key=f"{namespace}:{name}:breaker",
            clock=clock,
            on_change=self._changed,
            options=storage_options,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.current_state} ({self.state.describe()})>"

    # -- state -----------------------------------------------------------------------------

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, as this process sees it now."""
        return self.state.view[0]

    @property
    def mode(self) -> str:
        """``"normal"``, ``"forced-open"`` (operator) or ``"disabled"`` (every call passes, none counted)."""
        return self.state.view[1]

    def sync(self) -> None:
        """Read the shared state now (Redis storage); calls never need to, changes arrive by
        themselves within about a second."""
        self.state.sync()

    def add_listener(self, listener: Callable[["CircuitBreaker", str, str], None]) -> None:
        """``listener(breaker, old_state, new_state)`` for every state change this process sees."""
        self._listeners.append(listener)

    def _changed(self, old: str, new: str) -> None:
        metrics.set_state(self.name, new)
        for listener in self._listeners:
            try:
                listener(self, old, new)
            except Exception:
                logger.exception("circuit breaker %r: a listener failed", self.name)

    def gauge_values(self) -> tuple[float, float]:
        """(failure rate, slow-call rate) in percent for the gauges; -1 before a verdict."""
        state, mode, generation = self.state.view
        n, failure_rate, slow_rate = self.window.rates(generation)
        if state != CLOSED or mode != NORMAL or n < self.config.minimum_number_of_calls:
            return -1.0, -1.0
        return failure_rate, slow_rate

    def _transition(self, expected: str, generation: int, new: str, *, reason: str) -> int:
        """A transition this process makes (compare-and-set): the new generation, or 0."""
        wait = self.config.wait_duration_in_open_state
        moved = self.state.transition(expected, generation, new, wait=wait)
        if moved:
            self._made(expected, new, reason)
        return moved

    def _made(self, old: str, new: str, reason: str) -> None:
        metrics.breaker_transitions.labels(self.name, old, new).inc()
        logger.warning("circuit breaker %r: %s -> %s (%s)", self.name, old, new, reason)

    # -- manual control ----------------------------------------------------------------------

    def _command(self, new: str, mode: str, reason: str) -> None:
        old = self.current_state
        if self.state.transition(None, None, new, mode=mode) and old != new:
            self._made(old, new, reason)

    def force_open(self) -> None:
        """Reject every call until ``force_closed`` or ``reset``, whatever the outcomes."""
        self._command(OPEN, FORCED_OPEN, "forced open")

    def force_closed(self) -> None:
        """Close now and start counting afresh."""
        self._command(CLOSED, NORMAL, "forced closed")
        self.window.clear()

    def disable(self) -> None:
        """Let every call through and count none, until ``force_closed`` or ``reset``."""
        self._command(self.current_state, DISABLED, "disabled")
        logger.warning("circuit breaker %r disabled", self.name)

    def reset(self) -> None:
        """Closed, normal mode, empty window: as if just built."""
        self._command(CLOSED, NORMAL, "reset")
        self.window.clear()

    def close(self) -> None:
        """Stop sharing state (Redis storage): for a breaker that is thrown away."""
        self.state.close()

    def after_fork(self) -> None:
        """In a child process: locks of its own (the view and the window carry over); the
        breaker shares no lock with its ``Stats``."""
        self.window._lock = threading.Lock()
        self.state.lock = threading.Lock()

    # -- calls ---------------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """Permission for one call, or ``CircuitOpenError``. Hand the permit back to ``record``."""
        state, mode, generation = self.state.view
        if state == CLOSED and mode == NORMAL:
            return PERMIT_CLOSED, generation, 0
        return self._acquire_otherwise(state, mode, generation)

    def _acquire_otherwise(self, state: str, mode: str, generation: int) -> Permit:
        if mode == DISABLED:
            return PERMIT_DISABLED, generation, 0
        if mode == NORMAL:
            cfg = self.config
            wait = cfg.wait_duration_in_open_state
            if state == OPEN and self.clock.now() - self.state.since >= wait:
                self._transition(OPEN, generation, HALF_OPEN, reason="open wait over")
                state, mode, generation = self.state.view  # ours, or whoever moved it first
            if state == CLOSED and mode == NORMAL:
                return PERMIT_CLOSED, generation, 0
            if state == HALF_OPEN and mode == NORMAL:
                permitted = cfg.permitted_calls_in_half_open_state
                epoch = self.state.acquire_trial(generation, permitted)
                if epoch is not None:
                    return PERMIT_TRIAL, generation, epoch
                # Trials that never report back (their process died) must not wedge it here.
                if self.clock.now() - self.state.since >= wait:
                    restarted = self._transition(
                        HALF_OPEN, generation, HALF_OPEN, reason="trial calls did not report back"
                    )
                    if restarted:
                        epoch = self.state.acquire_trial(restarted, permitted)
                        if epoch is not None:
                            return PERMIT_TRIAL, restarted, epoch
        self.stats.add(metrics.CALLS_NOT_PERMITTED)
        raise CircuitOpenError(f"circuit breaker {self.name!r} is {state}", policy=self.name)

    def classify(self, exc: BaseException) -> str:
        """How an exception of the guarded call counts: ``"failure"`` or ``"ignored"``."""
        if isinstance(
            exc,
            (BusinessError, DeadlineExceededError, OverloadedError, *self.config.ignore_exceptions),
        ):
            # The request's fault, the caller's deadline, or a dependency that sheds load to
            # stay up: none of them is the dependency failing.
            return IGNORED
        if isinstance(exc, UpstreamStatusError) and (exc.status_code or 500) < 500:
            return IGNORED  # a 429 is retried, but a 4xx never counts against the dependency
        return FAILURE

    def record(self, permit: Permit, outcome: str, duration: float) -> int:
        """Count the outcome of a call let through by ``acquire``; the ``metrics`` slot it took."""
        kind, generation, epoch = permit
        if kind == PERMIT_DISABLED:
            return -1
        if outcome == IGNORED:
            self.release(permit)
            return metrics.CALLS_IGNORED
        failed = outcome == FAILURE
        slow = duration >= self.config.slow_call_duration
        if kind == PERMIT_TRIAL:
            self._record_trial(failed, slow, generation, epoch)
        elif generation == self.state.view[2]:  # else: from a state period that is over
            self._record_closed(failed, slow, generation)
        if failed:
            return metrics.CALLS_SLOW_FAILED if slow else metrics.CALLS_FAILED
        return metrics.CALLS_SLOW_SUCCESSFUL if slow else metrics.CALLS_SUCCESSFUL

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without an outcome (``KeyboardInterrupt`` and the like)."""
        kind, generation, epoch = permit
        if kind == PERMIT_TRIAL:
            self.state.release_trial(generation, epoch)

    def _record_closed(self, failed: bool, slow: bool, generation: int) -> None:
        cfg = self.config
        recorded = self.window.record(generation, failed, slow)
        if recorded is None:
            return
        n, failure_rate, slow_rate = recorded
        if n < cfg.minimum_number_of_calls:
            return
        if failure_rate >= cfg.failure_rate_threshold:
            reason = f"failure rate {failure_rate:.0f}% of {n} calls"
        elif slow_rate >= cfg.slow_call_rate_threshold:
            reason = f"slow-call rate {slow_rate:.0f}% of {n} calls"
        else:
            return
        self._transition(CLOSED, generation, OPEN, reason=reason)

    def _record_trial(self, failed: bool, slow: bool, generation: int, epoch: int) -> None:
        cfg = self.config
        tally = self.state.record_trial(generation, epoch, failed, slow)
        if tally is None or tally[0] < cfg.permitted_calls_in_half_open_state:
            return
        done, failures, slows = tally
        failure_rate, slow_rate = 100.0 * failures / done, 100.0 * slows / done
        if failure_rate >= cfg.failure_rate_threshold or slow_rate >= cfg.slow_call_rate_threshold:
            self._transition(
                HALF_OPEN,
                generation,
                OPEN,
                reason=f"{failures} of {done} trial calls failed, {slows} slow",
            )
        else:
            self._transition(
                HALF_OPEN,
                generation,
                CLOSED,
                reason=f"{done - failures} of {done} trial calls succeeded",
            )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` through the breaker: ``CircuitOpenError`` if not permitted, else its result."""
        permit = self.acquire()
        start = self.clock.now()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            slot = self.record(permit, self.classify(exc), self.clock.now() - start)
            if slot >= 0:
                self.stats.add(slot)
            raise
        except BaseException:
            self.release(permit)
            raise
        slot = self.record(permit, SUCCESS, self.clock.now() - start)
        if slot >= 0:
            self.stats.add(slot)
        return result
