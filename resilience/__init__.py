"""Resilience between services: named policies of bulkhead, deadline, retry, circuit breaker,
rate limiter and timeout.

    from resilience import policies
    policies["payments"].call(charge, idempotent=True, args=(order,), fallback=handler)

or, for a plain function, the decorator ``policy``::

    import resilience

    @resilience.policy("payments", idempotent=True)
    def charge(order, *, key): ...
"""

import functools
from collections.abc import Callable
from typing import Any

from resilience.handler import PolicyHandler

policies = PolicyHandler()

_UNSAID: Any = object()


def policy(
    name: str,
    *,
    idempotent: bool = _UNSAID,
    fallback: Callable[[Exception], Any] | None = None,
) -> Callable[[Callable], Callable]:
    """Run every call of the decorated function under policy ``name``.

    ``idempotent`` must be said: ``True`` lets a failed attempt be retried (the function may
    then run more than once), ``False`` allows one attempt. ``fallback(exc)`` answers when the
    call fails (see ``Policy.call``). The function keeps all its own arguments. The policy is
    looked up at each call, so a change of ``RESILIENCE_POLICIES`` (tests) applies at once.
    """
    if idempotent is _UNSAID or not isinstance(idempotent, bool):
        raise TypeError(
            f"resilience.policy({name!r}) needs idempotent=True (the function may run again "
            "after a failed attempt: retries are allowed) or idempotent=False (one attempt only)."
        )

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            return policies[name].call(
                fn, idempotent=idempotent, fallback=fallback, args=args, kwargs=kwargs
            )

        guarded.policy_name = name  # type: ignore[attr-defined]
        return guarded

    return decorate


__all__ = ["policies", "policy"]
