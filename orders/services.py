"""The booking flow. Every step is idempotent and leaves a mark on the order, so that the
request, a retry of it, and the worker can each drive an order forward without doing
anything twice: seats are held per order, the charge uses a key derived from the order, and
confirm/release/notify are idempotent at the other end.

An order answers ``confirmed``, ``payment_pending`` (seats held, the worker retries the
charge with the same key) or ``failed``; it is never reported paid unless payments said so.
"""

import hashlib
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from orders import clients
from orders.exceptions import (
    IdempotencyKeyReused,
    InventoryUnavailable,
    ShowNotFound,
)
from orders.models import Order
from resilience.exceptions import ResilienceError

logger = logging.getLogger(__name__)
Status = Order.Status

# The other service did not answer usefully: the step is worth trying again later.
UNAVAILABLE = (ResilienceError, clients.UnexpectedAnswer)


class OrderInProgress(Exception):
    """A request with the same Idempotency-Key is placing this order right now."""


def request_fingerprint(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def order_place(
    *, idempotency_key: str, show_id: int, quantity: int, email: str, card_token: str
) -> tuple[Order, bool]:
    """Place an order, or return the one placed under this key. ``(order, created)``."""
    digest = request_fingerprint(
        show_id=show_id, quantity=quantity, email=email, card_token=card_token
    )
    try:
        with transaction.atomic():
            order = Order.objects.create(
                idempotency_key=idempotency_key,
                request_fingerprint=digest,
                show_id=show_id,
                quantity=quantity,
                email=email,
                card_token=card_token,
            )
            # In the same transaction: if this process dies mid-flow, the worker finishes it.
            _schedule(order, delay=settings.ORDERS_SAFETY_NET_DELAY)
    except IntegrityError:
        order = Order.objects.get(idempotency_key=idempotency_key)
        if order.request_fingerprint != digest:
            raise IdempotencyKeyReused() from None
        if order.status == Status.PENDING:
            raise OrderInProgress() from None
        _raise_for_failure(order)
        return order, False
    _place(order)
    order.refresh_from_db()
    if not order.settled:
        # One task per request; the task reschedules itself until the order is settled.
        _schedule(
            order,
            delay=0 if order.status == Status.CONFIRMED else settings.ORDERS_SETTLE_BACKOFF[0],
        )
    _raise_for_failure(order)
    return order, True


def _raise_for_failure(order: Order) -> None:
    if order.status != Status.FAILED:
        return
    if order.failure_code == "show_not_found":
        raise ShowNotFound()
    if order.failure_code == "inventory_unavailable":
        raise InventoryUnavailable(order.id)


def _place(order: Order) -> None:
    try:
        hold = clients.inventory_hold(
            order_id=str(order.id), show_id=order.show_id, quantity=order.quantity
        )
    except clients.ShowNotFound:
        _fail(order, "show_not_found")
        return
    except clients.SeatsUnavailable:
        _fail(order, "seats_unavailable")
        return
    except UNAVAILABLE as exc:
        # The hold may have landed before the answer was lost: mark it for release.
        logger.warning("order %s: inventory unavailable: %s", order.id, exc)
        _fail(order, "inventory_unavailable", seats_maybe_held=True)
        return
    order.show_title = hold.show_title
    order.amount = hold.unit_price * order.quantity
    order.seats_held = True
    order.save(update_fields=["show_title", "amount", "seats_held", "updated_at"])
    charge(order)


def charge(order: Order) -> None:
    """Charge the order with its own idempotency key; confirm, fail, or leave it payment pending."""
    Order.objects.filter(pk=order.pk).update(payment_attempts=F("payment_attempts") + 1)
    try:
        charge_id = clients.payments_charge(
            idempotency_key=order.charge_idempotency_key,
            order_id=str(order.id),
            amount=order.amount,
            currency=order.currency,
            card_token=order.card_token,
        )
    except clients.CardDeclined:
        _fail(order, "card_declined")
        release_seats(order)
        return
    except UNAVAILABLE as exc:
        logger.warning("order %s: payment unavailable, pending: %s", order.id, exc)
        _move(order, Status.PAYMENT_PENDING, from_states=(Status.PENDING, Status.PAYMENT_PENDING))
        return
    order.charge_id = charge_id
    Order.objects.filter(pk=order.pk).update(charge_id=charge_id)
    _move(order, Status.CONFIRMED, from_states=(Status.PENDING, Status.PAYMENT_PENDING))
    finish_confirmed(order)


def finish_confirmed(order: Order) -> None:
    """Sell the held seats and send the confirmation; whatever fails is left for the worker."""
    if not order.seats_confirmed:
        try:
            clients.inventory_confirm(order_id=str(order.id))
        except clients.HoldReleased:
            # Paid, but the hold expired and was released: needs a person (refund or re-seat).
            logger.error("order %s is paid but its seats were released", order.id)
        except UNAVAILABLE as exc:
            logger.warning("order %s: seats not confirmed yet: %s", order.id, exc)
        else:
            _flag(order, seats_confirmed=True)
    if not order.notified:
        try:
            clients.notifications_send(order=order)
        except UNAVAILABLE as exc:
            logger.warning("order %s: notification left for the worker: %s", order.id, exc)
        else:
            _flag(order, notified=True)


def release_seats(order: Order) -> None:
    try:
        clients.inventory_release(order_id=str(order.id))
    except UNAVAILABLE as exc:
        logger.warning("order %s: seats not released yet: %s", order.id, exc)
    else:
        _flag(order, seats_released=True)


def order_settle(order: Order) -> None:
    """One pass of the worker over an order: do whatever is left. Raises when a step could not."""
    order.refresh_from_db()
    if order.status in (Status.PENDING, Status.PAYMENT_PENDING):
        if order.amount is None:
            _place(order)
        else:
            # Renew the hold (idempotent per order), then try the charge again with the same key.
            clients.inventory_hold(
                order_id=str(order.id), show_id=order.show_id, quantity=order.quantity
            )
            charge(order)
        order.refresh_from_db()
    if order.status == Status.CONFIRMED:
        finish_confirmed(order)
        if not order.booking_recorded:
            clients.recommendations_record(order=order)
            _flag(order, booking_recorded=True)
    if order.status == Status.FAILED and order.seats_held and not order.seats_released:
        clients.inventory_release(order_id=str(order.id))
        _flag(order, seats_released=True)


def _fail(order: Order, code: str, *, seats_maybe_held: bool = False) -> None:
    updates = {"failure_code": code}
    if seats_maybe_held:
        updates["seats_held"] = True
    Order.objects.filter(pk=order.pk).update(**updates)
    for key, value in updates.items():
        setattr(order, key, value)
    _move(order, Status.FAILED, from_states=(Status.PENDING, Status.PAYMENT_PENDING))


def _move(order: Order, status: str, *, from_states) -> bool:
    """Change status only from the expected states, so the request and the worker cannot clash."""
    moved = Order.objects.filter(pk=order.pk, status__in=from_states).update(
        status=status, updated_at=timezone.now()
    )
    order.refresh_from_db()
    return bool(moved)


def _flag(order: Order, **flags: bool) -> None:
    Order.objects.filter(pk=order.pk).update(**flags, updated_at=timezone.now())
    for key, value in flags.items():
        setattr(order, key, value)


def _schedule(order: Order, *, delay: float) -> None:
    from orders.tasks import settle_order

    run_after = timezone.now() + timedelta(seconds=delay) if delay else None
    task = settle_order.using(run_after=run_after) if run_after else settle_order
    task.enqueue(str(order.id), 0)
