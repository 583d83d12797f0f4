"""Work that must outlive a request, run by ``manage.py orders_worker`` of the orders service."""

import logging

from django.conf import settings
from django_tasks import task

from orders.lifecycle import Superseded, claim, park
from orders.models import Order
from orders.services import WORKER, drive, next_check, schedule

logger = logging.getLogger(__name__)


@task()
def settle_order(order_id: str, attempt: int = 0) -> str:
    """One pass of the worker over an order; until it is settled, the next pass is queued.

    Every exception leads to another pass (with backoff), never to a silent end, and never to
    an endless one: after ``ORDERS_SETTLE_MAX_PASSES`` passes the order is parked for staff.
    Each pass takes a fencing token first: a pass that a newer one fenced off (this worker was
    paused past its lease, its task reaped and handed on) stops and queues nothing. Should
    this process die before queuing the next pass, the reconciler finds the order without a
    live task.
    """
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return "missing"
    if order.settled:
        return "settled"
    if order.parked:
        return f"parked: {order.parked_reason}"
    error = ""
    try:
        claim(order)
        drive(order, by=WORKER)
    except Superseded as exc:
        logger.warning("order %s: this pass was fenced off (%s)", order_id, exc)
        return "superseded"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("order %s not settled yet (pass %d): %s", order_id, attempt, error)
    order.refresh_from_db()
    if order.settled:
        return "settled"
    if order.parked:
        return f"parked: {order.parked_reason}"
    if order.fence != order.claimed_fence:
        return "superseded"  # a newer pass owns the order and queues its own next one
    if attempt + 1 >= settings.ORDERS_SETTLE_MAX_PASSES:
        try:
            park(order, f"not settled after {attempt + 1} passes; last: {error or '-'}", by=WORKER)
        except Superseded:
            return "superseded"
        return f"parked: {order.parked_reason}"
    delay = next_check(order, attempt)
    schedule(order, delay=delay, attempt=attempt + 1)
    return f"{order.status}: next pass in {delay:.1f}s"
