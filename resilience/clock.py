"""The time source every policy reads, swappable for tests (see ``resilience.testing``)."""

import threading
import time


class Clock:
    """Monotonic time and a sleep that advances it."""

    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock(Clock):
    """Real monotonic time plus an offset; ``sleep`` and ``advance`` move the offset at once.

    Real I/O still takes real time, so deadlines stay honest, but no test waits on a backoff
    or an open-state wait duration.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._offset += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class _ClockProxy(Clock):
    """The process-wide clock; policies hold this proxy so that test mode reaches them all.

    ``now`` and ``sleep`` are the target's own, bound when the target is set: with the real
    clock, ``clock.now()`` is ``time.monotonic()`` itself, with no call in between.
    """

    def __init__(self) -> None:
        self.target = Clock()

    @property
    def target(self) -> Clock:
        return self._target

    @target.setter
    def target(self, target: Clock) -> None:
        self._target = target
        self.now = target.now
        self.sleep = target.sleep


clock = _ClockProxy()
