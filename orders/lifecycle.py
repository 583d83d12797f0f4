"""The life of an order: its states, the legal transitions, and the driver that may take each.

::

    pending ──seats held──▶ payment_pending ──charged──▶ paid ──seats sold──▶ confirmed
       │                         │                         │
       │ sold out, unknown show, │ declined, or the charge │ inventory answered: the hold
       │ or abandoned            │ key cancelled unused    │ is released for good
       ▼                         ▼                         ▼
     failed ◀────────────────────┴───── refunded ◀──── refunding

Drivers:

- ``REQUEST``: the HTTP request placing the order, or a replay of it (same Idempotency-Key)
  once the first request is known to be gone (``ORDERS_SAFETY_NET_DELAY`` after creation).
- ``WORKER``: ``orders.tasks.settle_order``, which drives an order until it is settled.
- ``RECONCILER``: takes no transition. It reaps the tasks of dead workers and hands every
  unsettled order that no live task owns to the worker (``orders.reconciler``).
- ``OPERATOR``: staff, through ``manage.py orders retry|refund|confirm`` on a parked order.

**After the charge, inventory decides.** Whether a paid order keeps its seats or gets its money
back is never decided by a race between two passes: a refund starts only after inventory has
answered a final release with "released and closed" (a closed hold can never be held again or
confirmed), and an answer of ``hold_confirmed`` means the seats are sold: the order is
confirmed. Two passes that both saw the seats gone therefore agree (docs/architecture.md).

**Nothing retries forever.** An answer that will not change (a 4xx with no meaning here, a hold
sold to an order that failed) or ``ORDERS_SETTLE_MAX_PASSES`` passes *park* the order: its status
stays where it stopped, ``parked_reason`` says why, nothing drives it, the metric
``orders_parked`` counts it and ``OrdersNeedAttention`` fires; staff settle it with
``manage.py orders``.

**One clock, and fencing.** Times are the database's (``Now()``), so leases and ages compare
one clock. Each pass of the worker takes a fencing token (``claim``); a pass that was paused
past its lease, and whose order another pass took since, can no longer move it
(``Superseded``).

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

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from orders.models import PARKED, SETTLED, Order, OrderEvent

logger = logging.getLogger(__name__)
Status = Order.Status


class Driver(enum.StrEnum):
    REQUEST = "request"
    WORKER = "worker"
    RECONCILER = "reconciler"
    OPERATOR = "operator"  # staff, through ``manage.py orders``


REQUEST, WORKER, OPERATOR = Driver.REQUEST, Driver.WORKER, Driver.OPERATOR

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
    (Status.PAID, Status.CONFIRMED): (
        frozenset({REQUEST, WORKER, OPERATOR}),
        "seats sold (inventory confirmed the hold, or answered that it is confirmed)",
    ),
    (Status.PAID, Status.REFUNDING): (
        frozenset({REQUEST, WORKER, OPERATOR}),
        "inventory answered that the hold is released for good: no seat for this order, ever",
    ),
    (Status.REFUNDING, Status.FAILED): (frozenset({WORKER, OPERATOR}), "refunded in full"),
    (Status.REFUNDING, Status.CONFIRMED): (
        frozenset({OPERATOR}),
        "staff: inventory sold it the seats and payments never refunded it (a refund decided "
        "before inventory decided, by an older version)",
    ),
}
FINAL = frozenset({Status.CONFIRMED, Status.FAILED})


class IllegalTransition(Exception):
    """A driver tried a transition the lifecycle does not have, or not for that driver."""


class Superseded(Exception):
    """This pass of the worker was fenced off: a newer pass owns the order (this one was
    paused past its lease, its task reaped and handed on). It stops, and writes nothing more."""


def _record(order: Order, kind: str, by: Driver, frm="", to="", detail="") -> None:
    OrderEvent.objects.create(
        order_id=order.pk, kind=kind, from_status=frm, to_status=to, by=by, detail=detail[:500]
    )


def _fenced(order: Order, by: Driver) -> Q:
    """The condition a write of ``by`` holds under: a worker's pass, only while its fence is
    the newest (``claim``)."""
    fence = getattr(order, "claimed_fence", None)
    if by == WORKER and fence is not None:
        return Q(fence=fence)
    return Q()


CLAIM_ATTEMPTS = 20


def claim(order: Order) -> int:
    """Take the next fencing token for a pass of the worker over ``order``: every earlier pass
    still running (a paused worker's) is fenced off from now on.

    A compare-and-set: the token this pass holds is the one its own UPDATE wrote, never one a
    concurrent claim wrote after it (an increment followed by a read would give both passes
    the newer token). Each miss means another pass claimed the order in between; after
    ``CLAIM_ATTEMPTS`` of them this pass gives way (``Superseded``)."""
    for _ in range(CLAIM_ATTEMPTS):
        fence = Order.objects.filter(pk=order.pk).values_list("fence", flat=True).get()
        if Order.objects.filter(pk=order.pk, fence=fence).update(fence=fence + 1):
            break
    else:
        raise Superseded(f"order {order.pk}: {CLAIM_ATTEMPTS} other passes claimed it meanwhile")
    order.refresh_from_db()
    order.claimed_fence = fence + 1
    return fence + 1


def _check_fence(order: Order, by: Driver) -> None:
    fence = getattr(order, "claimed_fence", None)
    if by == WORKER and fence is not None and order.fence != fence:
        raise Superseded(f"order {order.pk}: fence {fence} < {order.fence}")


def transition(order: Order, to: str, *, by: Driver, detail: str = "", **changes) -> bool:
    """Move ``order`` from the state it is in (as loaded) to ``to``; whether this call won.

    ``changes`` are written in the same UPDATE, and the move in the order's history. The order
    is reloaded either way: after a lost race it shows what the winner made of it. A worker's
    pass that was fenced off raises ``Superseded``. A parked order does not move (staff own it)
    but by its operator.
    """
    frm = order.status
    allowed = TRANSITIONS.get((frm, to))
    if allowed is None or by not in allowed[0]:
        raise IllegalTransition(f"{frm} -> {to} is not a transition {by} may take")
    rows = Order.objects.filter(_fenced(order, by), pk=order.pk, status=frm)
    if by != OPERATOR:
        rows = rows.exclude(PARKED)
    with transaction.atomic():
        won = rows.update(status=to, status_changed_at=Now(), updated_at=Now(), **changes)
        if won:
            _record(order, "transition", by, frm, to, detail)
    order.refresh_from_db()
    if won:
        logger.info("order %s: %s -> %s (%s)", order.id, frm, to, by)
    else:
        _check_fence(order, by)
    return bool(won)


def park(order: Order, reason: str, *, by: Driver = WORKER) -> bool:
    """Stop driving ``order``: staff decide (``manage.py orders``). Whether this call parked it
    (it stays as it is, and the reason says why)."""
    with transaction.atomic():
        won = (
            Order.objects.filter(_fenced(order, by), pk=order.pk, status=order.status)
            .exclude(SETTLED)
            .filter(parked_reason="")
            .update(parked_reason=reason[:500], parked_at=Now(), updated_at=Now())
        )
        if won:
            _record(order, "parked", by, order.status, order.status, reason)
    order.refresh_from_db()
    if won:
        logger.error("order %s parked in %s: %s", order.id, order.status, reason)
    else:
        _check_fence(order, by)
    return bool(won)


def unpark(order: Order, *, by: Driver = OPERATOR, detail: str = "") -> bool:
    """Give a parked order back to the worker."""
    with transaction.atomic():
        won = Order.objects.filter(PARKED, pk=order.pk).update(
            parked_reason="", parked_at=None, updated_at=Now()
        )
        if won:
            _record(order, "unparked", by, order.status, order.status, detail)
    order.refresh_from_db()
    return bool(won)


def mark(order: Order, **flags) -> None:
    """Record a step done in a final state (``seats_released``, ``notified``, ...)."""
    Order.objects.filter(pk=order.pk).update(**flags, updated_at=Now())
    for key, value in flags.items():
        setattr(order, key, value)


def describe() -> str:
    """The transition table as text (docs, and ``manage.py orders lifecycle``)."""
    lines = []
    for (frm, to), (drivers, why) in TRANSITIONS.items():
        who = ", ".join(sorted(drivers))
        lines.append(f"{frm:>16} -> {to:<16} {who:<26} {why}")
    return "\n".join(lines)
