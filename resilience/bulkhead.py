"""Bulkhead: at most N calls in flight through a policy in this process."""

import threading
import time

from resilience import metrics
from resilience.exceptions import BulkheadFullError


class Bulkhead:
    """A counter of calls in flight under a lock, with a condition for callers that may wait.

    The lock is the policy's ``Stats`` lock, so that a policy frees its slot and counts the
    call's outcome in one critical section.
    """

    def __init__(self, name: str, max_concurrent_calls: int, max_wait: float = 0.0) -> None:
        self.name = name
        self.max_concurrent_calls = max_concurrent_calls
        self.max_wait = max_wait
        self.in_flight = 0
        self.stats = metrics.stats_for(name)
        self.stats.bulkhead = self
        self.lock = self.stats.lock
        self._freed = threading.Condition(self.lock)
        self._waiting = 0
        metrics.bulkhead_max.labels(name).set(max_concurrent_calls)
        metrics.bulkhead_available.labels(name).set(max_concurrent_calls)

    @property
    def available(self) -> int:
        return self.max_concurrent_calls - self.in_flight

    def try_enter(self) -> bool:
        """Take a slot if one is free, without waiting."""
        with self.lock:
            if self.in_flight < self.max_concurrent_calls:
                self.in_flight += 1
                return True
        return False

    def enter(self, wait: float) -> bool:
        """Take a slot, waiting up to ``wait`` seconds (real time) for one to free up."""
        if self.try_enter():
            return True
        if wait <= 0:
            return False
        end = time.monotonic() + wait
        with self._freed:
            self._waiting += 1
            try:
                while self.in_flight >= self.max_concurrent_calls:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._freed.wait(left)
                self.in_flight += 1
                return True
            finally:
                self._waiting -= 1

    def after_fork(self, lock) -> None:
        """In a child process: no call of the parent's is in flight here."""
        self.lock = lock
        self._freed = threading.Condition(lock)
        self.in_flight = self._waiting = 0

    def left_locked(self) -> None:
        """Free a slot; the caller holds ``lock``."""
        self.in_flight -= 1
        if self._waiting:
            self._freed.notify()

    def full(self) -> BulkheadFullError:
        return BulkheadFullError(
            f"bulkhead {self.name!r} is full ({self.max_concurrent_calls} calls in flight)",
            policy=self.name,
        )
