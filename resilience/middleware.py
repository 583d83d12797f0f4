"""Honour the caller's deadline: drop work that can no longer be useful, bound the rest.

The header is a promise between services of one stack. A service that anyone can reach (the
edge) sets ``RESILIENCE_TRUST_DEADLINE_HEADER = False`` and ignores it: an outside client
could otherwise send a deadline of 1 ms and make every call behind it fail. Inside the stack,
a malformed, negative or huge value is refused here and never reaches a policy.
"""

from django.http import JsonResponse

from resilience import conf
from resilience import deadline as deadlines
from resilience.clock import clock

# Beyond a day the header is a mistake, not a deadline.
MAX_DEADLINE_MS = 86_400_000


class DeadlineMiddleware:
    """Reads ``X-Deadline-Remaining-Ms``; 504 if it is spent, else puts every outbound call under it."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        raw = request.META.get(deadlines.META_KEY)
        if raw is None or not conf.trust_deadline_header():
            return self.get_response(request)
        value = raw.strip()
        digits = value[1:] if value.startswith("-") else value
        valid = digits.isascii() and digits.isdecimal() and len(digits) <= 12
        remaining_ms = int(value) if valid else None
        if remaining_ms is None or remaining_ms > MAX_DEADLINE_MS:
            return JsonResponse(
                {
                    "code": "invalid_deadline",
                    "message": f"{deadlines.HEADER} must be a whole number of milliseconds up to "
                    f"{MAX_DEADLINE_MS}, got {raw[:40]!r}.",
                },
                status=400,
            )
        if remaining_ms <= 0:
            return JsonResponse(
                {
                    "code": "deadline_exceeded",
                    "message": "The caller's deadline passed before this request could be served.",
                },
                status=504,
            )
        request.deadline_remaining_ms = remaining_ms
        with deadlines.scope(remaining_ms / 1000, clock=clock):
            return self.get_response(request)
