"""Django signals for what a policy decided, so that a host project can log or count it.

Sent with ``sender=Policy`` (the class) and keyword arguments, on the caller's thread, and
only off the success path: a call that succeeds at its first attempt sends nothing. Each is
sent with ``send_robust``: a receiver that raises is logged by Django and changes nothing.

``retry``
    Another attempt will be made. ``policy`` (name), ``attempt`` (the number of the attempt
    that failed), ``delay`` (seconds of backoff before the next), ``exception`` (what it
    raised, or ``None`` when ``RETRY_ON_RESULT`` asked for a retry) and ``result`` (then).
``rejected``
    The call or an attempt was refused before it ran. ``policy``, ``reason``
    (``"circuit_open"``, ``"bulkhead_full"``, ``"rate_limited"`` or ``"throttled"``),
    ``exception``.
``fallback``
    The fallback is about to answer (sent before it runs, so also when it then raises).
    ``policy``, ``reason`` (the bounded label of ``resilience_fallback_calls_total``),
    ``exception``.

Example: ``apps.py`` of a host project::

    from django.dispatch import receiver
    from resilience import signals

    @receiver(signals.rejected)
    def log_rejection(sender, policy, reason, exception, **kwargs):
        logger.info("%s refused a call: %s", policy, reason)
"""

from django.dispatch import Signal

retry = Signal()
rejected = Signal()
fallback = Signal()
