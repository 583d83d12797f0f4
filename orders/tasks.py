"""Work that must outlive a request, run by ``manage.py db_worker`` of the orders service."""

import logging
import random
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks import task

from orders.models import Order
from orders.services import UNAVAILABLE, order_settle

logger = logging.getLogger(__name__)


@task()
def settle_order(order_id: str, attempt: int = 0) -> str:
    """Drive an order until nothing is left to do; reschedules itself with backoff until then."""
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return "missing"
    if order.settled:
        return "settled"
    try:
        order_settle(order)
    except UNAVAILABLE as exc:
        logger.info("order %s not settled yet (attempt %d): %s", order_id, attempt, exc)
    order.refresh_from_db()
    if order.settled:
        return "settled"
    initial, cap = settings.ORDERS_SETTLE_BACKOFF
    delay = random.uniform(0.5, 1.0) * min(cap, initial * 2**attempt)
    settle_order.using(run_after=timezone.now() + timedelta(seconds=delay)).enqueue(
        order_id, attempt + 1
    )
    return f"retry in {delay:.1f}s"
