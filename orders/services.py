"""The booking flow, driven by the request that places an order and by the worker that settles
it, each through the transitions of ``orders.lifecycle``.

Each pass looks at the state the order is in and does what that state needs next. Every call
to another service is idempotent per order, so a pass can be repeated, by any driver, after a
crash at any line; every state change is a conditional update, and a driver that lost it stops
and leaves the order to the winner.

An order answers ``confirmed``, ``payment_pending`` (seats held, the worker retries the charge
with the same key), ``paid`` (charged, seats being sold to it), ``refunding`` or ``failed``
(nothing charged, or refunded); it is never reported paid unless payments said so, and never
"nothing charged" unless that is known.
"""

import hashlib
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone

from orders import clients
from orders.exceptions import IdempotencyKeyReused, InventoryUnavailable, ShowNotFound
from orders.lifecycle import REQUEST, WORKER, Driver, mark, park, transition
from orders.models import Order
from resilience.exceptions import ResilienceError

logger = logging.getLogger(__name__)
Status = Order.Status

# The other service did not answer usefully: the step is worth trying again later.
UNAVAILABLE = (ResilienceError, clients.UnexpectedAnswer)


class OrderInProgress(Exception):
    """A request with the same Idempotency-Key is placing this order right now."""


class NotNow(Exception):
    """A step could not be done now (a service did not answer): the worker tries again later."""


class NeedsAttention(Exception):
    """A step can never be done by trying again: the order is parked for staff."""


def db_later(seconds: float):
    """The database's clock plus ``seconds``, as an expression for a write or a filter."""
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def request_fingerprint(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def db_now():
    """The database's clock: every process compares leases and ages against this one."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()  # SQLite: a file on this host, whose clock is the database's


def _age(since) -> float:
    return (db_now() - since).total_seconds()


# -- the request -------------------------------------------------------------------------------------


def order_place(
    *, idempotency_key: str, show_id: int, quantity: int, email: str, card_token: str
) -> tuple[Order, bool]:
    """Place an order, or return the one placed under this key. ``(order, created)``.

    ``InventoryUnavailable`` (503) when the seats could not be held: the order is kept,
    nothing was charged, and the same key places it again. ``OrderInProgress`` (409) while
    another request is placing it.
    """
    digest = request_fingerprint(
        show_id=show_id, quantity=quantity, email=email, card_token=card_token
    )
    lease = settings.ORDERS_SAFETY_NET_DELAY
    try:
        with transaction.atomic():
            order = Order.objects.create(
                idempotency_key=idempotency_key,
                request_fingerprint=digest,
                show_id=show_id,
                quantity=quantity,
                email=email,
                card_token=card_token,
                placing_until=db_later(lease),
            )
            # In the same transaction: some task owns the order from its first moment.
            schedule(order, delay=settings.ORDERS_SAFETY_NET_DELAY)
        created = True
    except IntegrityError:
        order = Order.objects.get(idempotency_key=idempotency_key)
        if order.request_fingerprint != digest:
            raise IdempotencyKeyReused() from None
        if order.status != Status.PENDING:
            _raise_for_failure(order)
            return order, False
        # Its first request is gone, or gave up on inventory: this one places it again, if
        # no other request is doing so (a conditional update on the placing lease).
        taken = (
            Order.objects.filter(pk=order.pk, status=Status.PENDING)
            .filter(Q(placing_until__isnull=True) | Q(placing_until__lt=Now()))
            .update(placing_until=db_later(lease))
        )
        if not taken:
            raise OrderInProgress() from None
        created = False
    drive(order, by=REQUEST)
    if order.status == Status.PENDING:
        # Nobody is placing it now: a replay may, at once.
        Order.objects.filter(pk=order.pk, status=Status.PENDING).update(placing_until=None)
        raise InventoryUnavailable(order.id)
    if not order.settled:
        schedule(order, delay=0 if order.status != Status.PAYMENT_PENDING else None)
    _raise_for_failure(order)
    return order, created


def _raise_for_failure(order: Order) -> None:
    if order.status == Status.FAILED and order.failure_code == "show_not_found":
        raise ShowNotFound()


# -- one pass of a driver ---------------------------------------------------------------------------


def drive(order: Order, *, by: Driver) -> None:
    """Do what the order's state needs next, as far as it goes now.

    ``NotNow`` (from the worker) when a step could not be done and should be tried again.
    """
    order.refresh_from_db()
    if order.parked:
        return  # staff own it (manage.py orders)
    try:
        _drive(order, by=by)
    except (clients.FinalAnswer, NeedsAttention) as exc:
        if by == WORKER:
            park(order, f"{type(exc).__name__}: {exc}", by=by)
        else:  # the request leaves it to the worker, which parks it
            logger.error("order %s: %s", order.id, exc)


def _drive(order: Order, *, by: Driver) -> None:
    if order.status == Status.PENDING:
        _hold_seats(order, by=by)
    if order.status == Status.PAYMENT_PENDING:
        _charge(order, by=by)
    if order.status == Status.PAID:
        _sell_seats(order, by=by)
    if order.status == Status.REFUNDING and by == WORKER:
        _refund(order)
    if order.status == Status.CONFIRMED:
        _after_confirmed(order, by=by)
    if order.status == Status.FAILED:
        _after_failed(order, by=by)


def _hold_seats(order: Order, *, by: Driver) -> None:
    if by == WORKER:
        # A pending order belongs to its request (and to replays of it): the worker never
        # starts a charge nobody asked for. It only ends one that was abandoned.
        if _age(order.created_at) >= settings.ORDERS_PENDING_MAX_AGE:
            _fail(order, "abandoned", by=by)
        return
    try:
        hold = clients.inventory_hold(
            order_id=str(order.id), show_id=order.show_id, quantity=order.quantity, rehold=True
        )
    except clients.ShowNotFound:
        _fail(order, "show_not_found", by=by)
        return
    except (clients.SeatsUnavailable, clients.HoldClosed):
        _fail(order, "seats_unavailable", by=by)
        return
    except clients.FinalAnswer as exc:
        # An answer no replay changes (the request breaks inventory's contract): the order
        # fails now, nothing charged, rather than a 503 that invites the same request again.
        logger.error("order %s: inventory refused the hold for good: %s", order.id, exc)
        _fail(order, "inventory_refused", by=by)
        return
    except UNAVAILABLE as exc:
        # The hold may have landed before its answer was lost: the order stays pending (its
        # seats held or not), a replay places it again, and after ORDERS_PENDING_MAX_AGE the
        # worker fails it and gives any seats back.
        logger.warning("order %s: inventory unavailable: %s", order.id, exc)
        return
    transition(
        order,
        Status.PAYMENT_PENDING,
        by=by,
        show_title=hold.show_title,
        amount=hold.unit_price * order.quantity,
    )


def _charge(order: Order, *, by: Driver) -> None:
    if by == WORKER:
        if _age(order.status_changed_at) >= settings.ORDERS_PAYMENT_PENDING_MAX_AGE:
            _settle_the_charge(order, by=by, failure_code="payment_expired")
            return
        # Never charge against a hold that is gone: renew it (held again if it expired).
        try:
            hold = clients.inventory_hold(
                order_id=str(order.id),
                show_id=order.show_id,
                quantity=order.quantity,
                rehold=True,
            )
        except (clients.SeatsUnavailable, clients.HoldClosed):
            _settle_the_charge(order, by=by, failure_code="seats_unavailable")
            return
        except UNAVAILABLE as exc:
            raise NotNow(f"inventory: {exc}") from exc
        if hold.status == "released":  # an inventory that did not hold it again: not now
            raise NotNow("inventory: the hold is released, not held again")
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
        _fail(order, "card_declined", by=by)
    except clients.ChargeCancelled:
        _fail(order, "payment_cancelled", by=by)
    except clients.ChargeRejected as exc:
        logger.error("order %s: payments refused the charge request: %s", order.id, exc)
        _settle_the_charge(order, by=by, failure_code="payment_refused")
    except UNAVAILABLE as exc:
        logger.warning("order %s: payment unavailable, pending: %s", order.id, exc)
        if by == WORKER:
            raise NotNow(f"payments: {exc}") from exc
    else:
        transition(order, Status.PAID, by=by, charge_id=charge_id)


def _settle_the_charge(order: Order, *, by: Driver, failure_code: str) -> None:
    """Ask payments, under the charge key, whether the charge happened, and make sure a late
    request can never make it happen: paid if it did, else failed with ``failure_code``
    (nothing charged: that is known now)."""
    try:
        outcome = clients.payments_cancel(idempotency_key=order.charge_idempotency_key)
    except UNAVAILABLE as exc:
        raise NotNow(f"payments (cancel): {exc}") from exc
    logger.warning("order %s (%s): payments says %s", order.id, failure_code, outcome.state)
    if outcome.state == "charged":
        transition(order, Status.PAID, by=by, charge_id=outcome.charge_id)
    elif outcome.state == "declined":
        _fail(order, "card_declined", by=by)
    else:
        _fail(order, failure_code, by=by)


def sell_seats_at_inventory(order: Order) -> None:
    """Inventory sells the order its held seats; a hold that expired before they were sold is
    held again first, if seats are left. Raises what inventory answered: SeatsUnavailable,
    HoldClosed, HoldReleased, or one of UNAVAILABLE."""
    order_id = str(order.id)
    try:
        clients.inventory_confirm(order_id=order_id)
    except clients.HoldReleased:
        clients.inventory_hold(
            order_id=order_id, show_id=order.show_id, quantity=order.quantity, rehold=True
        )
        clients.inventory_confirm(order_id=order_id)


def _sell_seats(order: Order, *, by: Driver) -> None:
    try:
        sell_seats_at_inventory(order)
    except (clients.SeatsUnavailable, clients.HoldClosed, clients.HoldReleased):
        _give_up_the_seats(order, by=by)
        return
    except UNAVAILABLE as exc:
        logger.warning("order %s: seats not sold yet: %s", order.id, exc)
        if by == WORKER:
            raise NotNow(f"inventory: {exc}") from exc
        return
    transition(order, Status.CONFIRMED, by=by)


def _give_up_the_seats(order: Order, *, by: Driver) -> None:
    """A paid order found no seats: inventory decides, by the final release. Released and
    closed: no seat for it, ever, and it is refunded. Confirmed: another pass sold it the
    seats meanwhile, and it is confirmed. Never a refund on a guess (docs/architecture.md)."""
    try:
        outcome = clients.inventory_release(order_id=str(order.id), final=True)
    except clients.HoldConfirmed:
        logger.warning("order %s: its seats were sold after all: confirming it", order.id)
        transition(order, Status.CONFIRMED, by=by, detail="release refused: hold_confirmed")
        return
    except UNAVAILABLE as exc:
        if by == WORKER:
            raise NotNow(f"inventory (release): {exc}") from exc
        return
    logger.error("order %s is paid but its seats are gone (%s): refunding it", order.id, outcome)
    if (
        transition(
            order,
            Status.REFUNDING,
            by=by,
            seats_released=True,
            failure_code="seats_unavailable",
            detail=f"final release: {outcome}",
        )
        and by == WORKER
    ):
        _refund(order)


def _refund(order: Order) -> None:
    if not order.seats_released:  # refunding since before inventory decided: ask it now
        try:
            clients.inventory_release(order_id=str(order.id), final=True)
        except clients.HoldConfirmed:
            raise NeedsAttention(
                "refunding, but inventory says its seats are sold: refund or confirm it"
            ) from None
        except UNAVAILABLE as exc:
            raise NotNow(f"inventory (release): {exc}") from exc
        mark(order, seats_released=True)
    try:
        refund_id = clients.payments_refund(
            idempotency_key=order.refund_idempotency_key,
            charge_id=order.charge_id,
            reason="seats_unavailable",
        )
    except UNAVAILABLE as exc:
        raise NotNow(f"payments (refund): {exc}") from exc
    transition(
        order,
        Status.FAILED,
        by=WORKER,
        refund_id=refund_id,
        failure_code=order.failure_code or "seats_unavailable",
    )


def _fail(order: Order, code: str, *, by: Driver) -> None:
    if transition(order, Status.FAILED, by=by, failure_code=code):
        _after_failed(order, by=by)


def _after_confirmed(order: Order, *, by: Driver) -> None:
    """Tickets by e-mail (the request tries once; the worker until it is done) and the booking
    for recommendations (the worker only: nobody waits for it)."""
    if not order.notified:
        try:
            clients.notifications_send(order=order)
        except UNAVAILABLE as exc:
            logger.warning("order %s: notification left for the worker: %s", order.id, exc)
            if by == WORKER:
                raise NotNow(f"notifications: {exc}") from exc
        else:
            mark(order, notified=True)
    if by == WORKER and not order.booking_recorded:
        try:
            clients.recommendations_record(order=order)
        except UNAVAILABLE as exc:
            raise NotNow(f"recommendations: {exc}") from exc
        mark(order, booking_recorded=True)


def _after_failed(order: Order, *, by: Driver) -> None:
    """Seats back for good; a customer whose money was refunded is told."""
    if not order.seats_released:
        try:
            clients.inventory_release(order_id=str(order.id), final=True)
        except clients.HoldConfirmed:
            # Sold seats for an order that failed: an invariant broken; staff decide.
            raise NeedsAttention("failed, but inventory says its seats are sold") from None
        except UNAVAILABLE as exc:
            logger.warning("order %s: seats not released yet: %s", order.id, exc)
            if by == WORKER:
                raise NotNow(f"inventory (release): {exc}") from exc
        else:
            mark(order, seats_released=True)
    if order.refunded and not order.notified:
        try:
            clients.notifications_send(order=order, kind="order_refunded")
        except UNAVAILABLE as exc:
            if by == WORKER:
                raise NotNow(f"notifications: {exc}") from exc
        else:
            mark(order, notified=True)


# -- the worker's queue -----------------------------------------------------------------------------


def next_check(order: Order, attempt: int) -> float:
    """Seconds until the worker should look at ``order`` again after ``attempt`` passes."""
    initial, cap = settings.ORDERS_SETTLE_BACKOFF
    delay = min(cap, initial * 2**attempt)
    if order.status == Status.PENDING:
        # Nothing to do for a pending order until its request is surely gone.
        until = settings.ORDERS_PENDING_MAX_AGE - _age(order.created_at)
        delay = max(delay, until)
    return max(0.0, delay)


def schedule(order: Order, *, delay: float | None, attempt: int = 0) -> None:
    """Queue a pass of the worker over ``order`` in ``delay`` seconds (``None``: the backoff
    of ``attempt``)."""
    from orders.tasks import settle_order

    if delay is None:
        delay = settings.ORDERS_SETTLE_BACKOFF[0]
    run_after = timezone.now() + timedelta(seconds=delay) if delay else None
    task = settle_order.using(run_after=run_after) if run_after else settle_order
    task.enqueue(str(order.id), attempt)
