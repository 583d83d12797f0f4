"""Work that must outlive a request, run by ``manage.py orders_worker`` of the orders service."""

import logging

from django_tasks import task

from orders.models import Order
from orders.services import WORKER, drive, next_check, schedule

logger = logging.getLogger(__name__)


@task()
def settle_order(order_id: str, attempt: int = 0) -> str:
    """One pass of the worker over an order; until it is settled, the next pass is queued.

    Every exception leads to another pass (with backoff), never to a silent end. Should this
    process die before queuing it, the reconciler finds the order without a live task.
    """
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return "missing"
    if order.settled:
        return "settled"
    try:
        drive(order, by=WORKER)
    except Exception as exc:
        logger.warning("order %s not settled yet (pass %d): %s", order_id, attempt, exc)
    order.refresh_from_db()
    if order.settled:
        return "settled"
    delay = next_check(order, attempt)
    schedule(order, delay=delay, attempt=attempt + 1)
    return f"{order.status}: next pass in {delay:.1f}s"
