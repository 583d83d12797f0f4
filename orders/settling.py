"""``manage.py orders settle``: reset orders' shared breakers, then wait (bounded) until no
order is left to settle. The workshop's ``lab start`` runs it before it reads the stack, so that
every lab starts from a settled stack.

An earlier lab may leave orders unsettled behind it (lab 7 leaves a few dozen payment_pending
behind the breaker it opened): orders' task worker settles them later, in a burst, while the
next lab's ``lab start`` reads the ledgers, one service after the other, seconds apart. An
order read payment_pending whose hold is read a second later confirmed looks like seats sold
without an order (issue 14). So, first, orders' breakers shared in Redis are reset (they
outlive the lab that opened them: every worker of orders, the task worker's too, waits out
their open state otherwise), then ``lab start`` waits, bounded, until no order is left to
settle. Parked orders are staff's (``manage.py orders parked``): nothing settles them, so
they are counted, not waited for.
"""

import json
import time
from collections import Counter

from django.conf import settings

from orders.models import PARKED, SETTLED, Order

# The services orders' task worker calls to settle an order (charge, sell the seats, e-mail,
# record the booking): its breakers for them.
CALLEES = ("payments", "inventory", "notifications", "recommendations")


def reset_shared_breakers(names=CALLEES) -> list[str]:
    """Reset orders' breakers for ``names`` when they are shared (Redis storage): closed,
    nothing counted, in every worker process. With memory storage each process has its own,
    out of reach from here: nothing is reset ([])."""
    if not settings.RESILIENCE_STORAGE:
        return []
    from resilience import policies

    for name in names:
        policies[name].breaker.reset()
    return list(names)


def unsettled() -> tuple[Counter, int]:
    """(status -> how many orders are left to settle and not parked, how many are parked)."""
    left = Counter(Order.objects.exclude(SETTLED).exclude(PARKED).values_list("status", flat=True))
    return left, Order.objects.exclude(SETTLED).filter(PARKED).count()


def wait_until_settled(
    wait: float, *, poll: float = 0.5, clock=time.monotonic, sleep=time.sleep, count=unsettled
) -> dict:
    """Poll (every ``poll`` s, for ``wait`` s at most) until no order is left to settle but
    parked ones. What it found: the orders left at first and at the end (status -> count), the
    parked ones, the seconds it waited, the polls it made."""
    start = clock()
    first, parked = count()
    left, polls = first, 1
    while left and clock() - start < wait:
        sleep(min(poll, max(0.0, wait - (clock() - start))))
        left, parked = count()
        polls += 1
    return {
        "first": dict(first),
        "left": dict(left),
        "parked": parked,
        "seconds": round(clock() - start, 2),
        "polls": polls,
    }


def settle(wait: float, *, wait_for_orders: bool = True) -> str:
    """Reset the shared breakers, then wait (unless told not to: a fault is still set and
    would keep orders unsettled). What it found, as one JSON line."""
    found = {"reset": reset_shared_breakers()}
    if wait_for_orders:
        found.update(wait_until_settled(wait))
    else:
        left, parked = unsettled()
        found.update(first=dict(left), left=dict(left), parked=parked, seconds=0.0, polls=1)
    return json.dumps(found)
