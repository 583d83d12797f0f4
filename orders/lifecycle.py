"""The life of an order: its states, the legal transitions, and the driver that may take each.

::

    pending ──seats held──▶ payment_pending ──charged──▶ paid ──seats sold──▶ confirmed
       │                         │                         │
       │ sold out, unknown show, │ declined, or the charge │ seats gone (the hold expired
       │ or abandoned            │ key cancelled unused    │ and no seat is left)
       ▼                         ▼                         ▼
     failed ◀────────────────────┴───── refunded ◀──── refunding

Drivers:

- ``REQUEST``: the HTTP request placing the order, or a replay of it (same Idempotency-Key)
  once the first request is known to be gone (``ORDERS_SAFETY_NET_DELAY`` after creation).
- ``WORKER``: ``orders.tasks.settle_order``, which drives an order until it is settled.
- ``RECONCILER``: takes no transition. It reaps the tasks of dead workers and hands every
  unsettled order that no live task owns to the worker (``orders.reconciler``).

Every transition is one conditional UPDATE (``... WHERE status = <from>``) that says whether it
won, and only the driver that won performs the side effects that follow. Side effects come
after a committed intent: ``payment_pending`` is committed before payments is called (so that
no request charges an order another driver failed), ``refunding`` before the refund. Each
side effect is idempotent at the service that performs it (hold and confirm per order, the
charge, refund and cancel under keys derived from the order, e-mail per order and kind), so
any step can be repeated by any driver, after a crash at any line.

No state lasts forever: ``pending`` ends after ``ORDERS_PENDING_MAX_AGE`` (failed, nothing was
charged), ``payment_pending`` after ``ORDERS_PAYMENT_PENDING_MAX_AGE`` (payments is asked,
under the charge key, whether the charge happened, and the key is cancelled if not), and
``paid`` and ``refunding`` end as soon as inventory and payments answer.
"""

import enum
import logging

from django.utils import timezone

from orders.models import Order

logger = logging.getLogger(__name__)
Status = Order.Status


class Driver(enum.StrEnum):
    REQUEST = "request"
    WORKER = "worker"
    RECONCILER = "reconciler"


REQUEST, WORKER = Driver.REQUEST, Driver.WORKER

# (from, to): the drivers allowed to take it, and why it happens.
TRANSITIONS: dict[tuple[str, str], tuple[frozenset[Driver], str]] = {
    (Status.PENDING, Status.PAYMENT_PENDING): (
        frozenset({REQUEST}),
        "seats held: the charge is intended from now on",
    ),
    (Status.PENDING, Status.FAILED): (
        frozenset({REQUEST, WORKER}),
        "sold out or unknown show (request); abandoned by its request (worker): nothing charged",
    ),
    (Status.PAYMENT_PENDING, Status.PAID): (
        frozenset({REQUEST, WORKER}),
        "payments charged, or said it had under the charge key",
    ),
    (Status.PAYMENT_PENDING, Status.FAILED): (
        frozenset({REQUEST, WORKER}),
        "declined, or the charge key cancelled unused: nothing charged",
    ),
    (Status.PAID, Status.CONFIRMED): (frozenset({REQUEST, WORKER}), "seats sold"),
    (Status.PAID, Status.REFUNDING): (
        frozenset({REQUEST, WORKER}),
        "the hold expired and no seat is left to hold again",
    ),
    (Status.REFUNDING, Status.FAILED): (frozenset({WORKER}), "refunded in full"),
}
FINAL = frozenset({Status.CONFIRMED, Status.FAILED})


class IllegalTransition(Exception):
    """A driver tried a transition the lifecycle does not have, or not for that driver."""


def transition(order: Order, to: str, *, by: Driver, **changes) -> bool:
    """Move ``order`` from the state it is in (as loaded) to ``to``; whether this call won.

    ``changes`` are written in the same UPDATE. The order is reloaded either way: after a
    lost race it shows what the winner made of it.
    """
    frm = order.status
    allowed = TRANSITIONS.get((frm, to))
    if allowed is None or by not in allowed[0]:
        raise IllegalTransition(f"{frm} -> {to} is not a transition {by} may take")
    now = timezone.now()
    won = Order.objects.filter(pk=order.pk, status=frm).update(
        status=to, status_changed_at=now, updated_at=now, **changes
    )
    order.refresh_from_db()
    if won:
        logger.info("order %s: %s -> %s (%s)", order.id, frm, to, by)
    return bool(won)


def mark(order: Order, **flags) -> None:
    """Record a step done in a final state (``seats_released``, ``notified``, ...)."""
    Order.objects.filter(pk=order.pk).update(**flags, updated_at=timezone.now())
    for key, value in flags.items():
        setattr(order, key, value)


def describe() -> str:
    """The transition table as text (docs, and ``manage.py order_lifecycle``)."""
    lines = []
    for (frm, to), (drivers, why) in TRANSITIONS.items():
        who = ", ".join(sorted(drivers))
        lines.append(f"{frm:>16} -> {to:<16} {who:<16} {why}")
    return "\n".join(lines)
