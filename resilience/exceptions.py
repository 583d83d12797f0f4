"""Exceptions raised by resilience policies and by ``ServiceClient``.

Everything a policy raises because a dependency is unavailable is a ``ResilienceError``,
so a caller that wants "the dependency did not answer" catches that one class.
"""


class ResilienceError(Exception):
    """A call did not complete because its dependency failed or a policy refused it."""

    policy: str | None = None

    def __init__(self, message: str = "", *, policy: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__)
        self.policy = policy


class CircuitOpenError(ResilienceError):
    """The circuit breaker is open (or its half-open trials are taken): the call was not made."""


class BulkheadFullError(ResilienceError):
    """Every concurrent-call slot of the bulkhead is taken: the call was not made."""


class RateLimitedError(ResilienceError):
    """The rate limiter had no permit within its timeout: the call was not made."""


class DeadlineExceededError(ResilienceError):
    """The call's deadline passed before it could complete."""


class UpstreamError(ResilienceError):
    """The dependency failed: a connection error, a timeout or an error status."""

    retryable: bool = True


class UpstreamConnectionError(UpstreamError):
    """The dependency could not be reached (refused, reset, DNS)."""


class UpstreamTimeoutError(UpstreamError):
    """The dependency did not answer within the attempt's timeout."""


class OverloadedError(UpstreamError):
    """The dependency refused the call for overload (503 with ``X-Overloaded``), or this
    process's adaptive throttle held the call back: never retried, never counted by the breaker."""

    retryable = False

    def __init__(self, message: str = "", *, policy=None, response=None, retry_after=None) -> None:
        super().__init__(message, policy=policy)
        self.response = response
        self.retry_after = retry_after


class UpstreamStatusError(UpstreamError):
    """The dependency answered with a 5xx, or a status listed in ``RETRY_ON_STATUS``."""

    def __init__(
        self,
        message: str = "",
        *,
        policy=None,
        response=None,
        retryable=False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, policy=policy)
        self.response = response
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def status_code(self) -> int | None:
        return getattr(self.response, "status_code", None)


class BusinessError(Exception):
    """A failure of the request, not of the dependency: never retried, never counted by a breaker."""
