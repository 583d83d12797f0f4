"""One time budget for a whole call, visible to the code running inside it.

The current deadline lives in a context variable: a policy opens a scope for its
``DEADLINE``, narrowed by any deadline already in force (for instance one that arrived with
the incoming request, see ``resilience.middleware``). ``ServiceClient`` caps each attempt by
what remains and sends the rest on to the next service in ``HEADER``.
"""

import contextlib
import contextvars
from collections.abc import Iterator

from resilience.clock import Clock
from resilience.clock import clock as default_clock
from resilience.exceptions import DeadlineExceededError

HEADER = "X-Deadline-Remaining-Ms"
META_KEY = "HTTP_X_DEADLINE_REMAINING_MS"

_current: contextvars.ContextVar["Deadline | None"] = contextvars.ContextVar(
    "resilience_deadline", default=None
)


class Deadline:
    """A point in time on ``clock`` by which the work in its scope must be done."""

    __slots__ = ("clock", "expires_at")

    def __init__(self, expires_at: float, clock: Clock = default_clock) -> None:
        self.expires_at = expires_at
        self.clock = clock

    def __repr__(self) -> str:
        return f"<Deadline in {self.remaining():.3f} s>"

    def remaining(self) -> float:
        return self.expires_at - self.clock.now()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, policy: str | None = None) -> float:
        """The seconds left; ``DeadlineExceededError`` if none are."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError(
                f"deadline passed {-left:.3f} s ago" + (f" in policy {policy!r}" if policy else ""),
                policy=policy,
            )
        return left


def current() -> Deadline | None:
    """The deadline in force here, or ``None``."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left of the deadline in force, or ``None`` when there is none."""
    deadline = _current.get()
    return None if deadline is None else deadline.remaining()


@contextlib.contextmanager
def scope(seconds: float | None, *, clock: Clock = default_clock) -> Iterator[Deadline | None]:
    """Run the block under a deadline of ``seconds``, or the one in force if that is sooner."""
    outer = _current.get()
    if seconds is None:
        yield outer
        return
    expires_at = clock.now() + seconds
    if outer is not None and outer.expires_at <= expires_at:
        yield outer
        return
    token = _current.set(Deadline(expires_at, clock))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
