"""Bulkhead: at most N calls in flight through a policy in this process."""

import contextlib
import threading
from collections.abc import Iterator

from resilience import metrics
from resilience.exceptions import BulkheadFullError


class Bulkhead:
    def __init__(self, name: str, max_concurrent_calls: int, max_wait: float = 0.0) -> None:
        self.name = name
        self.max_concurrent_calls = max_concurrent_calls
        self.max_wait = max_wait
        self._slots = threading.BoundedSemaphore(max_concurrent_calls)
        self._lock = threading.Lock()
        self._in_flight = 0
        metrics.bulkhead_max.labels(name).set(max_concurrent_calls)
        self._available_gauge = metrics.bulkhead_available.labels(name)
        self._available_gauge.set(max_concurrent_calls)
        self._permitted = metrics.bulkhead_calls.labels(name, "permitted")
        self._rejected = metrics.bulkhead_calls.labels(name, "rejected")

    @property
    def available(self) -> int:
        return self.max_concurrent_calls - self._in_flight

    @contextlib.contextmanager
    def acquire(self, max_wait: float | None = None) -> Iterator[None]:
        """Hold one slot for the block; ``BulkheadFullError`` after ``max_wait`` if none frees up."""
        max_wait = self.max_wait if max_wait is None else max_wait
        if max_wait > 0:
            got = self._slots.acquire(timeout=max_wait)
        else:
            got = self._slots.acquire(blocking=False)
        if not got:
            self._rejected.inc()
            raise BulkheadFullError(
                f"bulkhead {self.name!r} is full ({self.max_concurrent_calls} calls in flight)",
                policy=self.name,
            )
        self._moved(+1)
        self._permitted.inc()
        try:
            yield
        finally:
            self._moved(-1)
            self._slots.release()

    def _moved(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self._available_gauge.set(self.max_concurrent_calls - self._in_flight)
