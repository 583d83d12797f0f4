"""Seat holds: every write is idempotent per order and cannot oversell, on SQLite or PostgreSQL.

Seat counts change only through conditional UPDATEs (``... WHERE seats_total >= held + sold + n``),
so two concurrent holds for the last seat cannot both succeed; a CHECK constraint backs it up.
A hold moves by an UPDATE conditioned on its current status (and, for expiry, on its expiry
time), so that each move happens once, whoever races it:

    held -> confirmed     the order paid: seats sold
    held -> released      the order failed (closed: for good), or the hold expired
    released -> held      re-held for its order after it expired, if seats are left (``rehold``)
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from inventory.exceptions import (
    HoldClosed,
    HoldConfirmed,
    HoldMismatch,
    HoldNotFound,
    HoldReleased,
    SeatsUnavailable,
    ShowNotFound,
)
from inventory.models import SeatHold, Show

logger = logging.getLogger(__name__)
Status = SeatHold.Status


def _expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.SEAT_HOLD_TTL)


def _take_seats(show_id: int, quantity: int) -> bool:
    return bool(
        Show.objects.filter(
            pk=show_id, seats_total__gte=F("seats_held") + F("seats_sold") + quantity
        ).update(seats_held=F("seats_held") + quantity)
    )


def hold_create(
    *, order_id: str, show_id: int, quantity: int, rehold: bool = False
) -> tuple[SeatHold, bool]:
    """Hold seats for an order; the same order again returns its hold and ``False``.

    Asking again renews a hold that is held, and answers whatever else it is (its ``status``
    says: confirmed, or released). With ``rehold``, a hold that expired is held again if
    seats are left (``SeatsUnavailable`` otherwise); a hold closed by its order never is.
    """
    try:
        with transaction.atomic():
            existing = SeatHold.objects.filter(order_id=order_id).first()
            if existing is not None:
                return _again(existing, show_id=show_id, quantity=quantity, rehold=rehold)
            if not _take_seats(show_id, quantity):
                if not Show.objects.filter(pk=show_id).exists():
                    raise ShowNotFound()
                raise SeatsUnavailable()
            hold = SeatHold.objects.create(
                order_id=order_id, show_id=show_id, quantity=quantity, expires_at=_expiry()
            )
            return hold, True
    except IntegrityError:
        # Another request for the same order won the race; its transaction holds the seats.
        existing = SeatHold.objects.get(order_id=order_id)
        return _again(existing, show_id=show_id, quantity=quantity, rehold=rehold)


def _again(hold: SeatHold, *, show_id: int, quantity: int, rehold: bool) -> tuple[SeatHold, bool]:
    if hold.show_id != show_id or hold.quantity != quantity:
        raise HoldMismatch()
    if hold.status == Status.HELD:
        renewed = SeatHold.objects.filter(pk=hold.pk, status=Status.HELD).update(
            expires_at=_expiry(), updated_at=timezone.now()
        )
        if not renewed:  # the sweeper released it since it was read: as if read released
            hold.refresh_from_db()
    if hold.status == Status.RELEASED and rehold:
        if hold.closed:
            raise HoldClosed()
        with transaction.atomic():
            moved = SeatHold.objects.filter(
                pk=hold.pk, status=Status.RELEASED, closed=False
            ).update(status=Status.HELD, expires_at=_expiry(), updated_at=timezone.now())
            if moved and not _take_seats(hold.show_id, hold.quantity):
                transaction.set_rollback(True)
                raise SeatsUnavailable()
        if moved:
            logger.info("hold %s held again after it expired", hold.order_id)
    hold.refresh_from_db()
    return hold, False


def hold_confirm(*, order_id: str) -> SeatHold:
    """Turn held seats into sold seats; confirming twice is a no-op."""
    with transaction.atomic():
        hold = SeatHold.objects.filter(order_id=order_id).first()
        if hold is None:
            raise HoldNotFound()
        moved = SeatHold.objects.filter(pk=hold.pk, status=Status.HELD).update(
            status=Status.CONFIRMED, updated_at=timezone.now()
        )
        if moved:
            Show.objects.filter(pk=hold.show_id).update(
                seats_held=F("seats_held") - hold.quantity,
                seats_sold=F("seats_sold") + hold.quantity,
            )
        hold.refresh_from_db()
    if hold.status == Status.RELEASED:
        raise HoldReleased()
    return hold


def hold_release(*, order_id: str, final: bool = False) -> SeatHold | None:
    """Give held seats back; releasing twice, or an order that never held, is a no-op.

    ``final``: the order's last word (it failed); the hold can then never be held again.
    """
    with transaction.atomic():
        hold = SeatHold.objects.filter(order_id=order_id).first()
        if hold is None:
            return None
        moved = SeatHold.objects.filter(pk=hold.pk, status=Status.HELD).update(
            status=Status.RELEASED, updated_at=timezone.now()
        )
        if moved:
            Show.objects.filter(pk=hold.show_id).update(seats_held=F("seats_held") - hold.quantity)
        if final:
            SeatHold.objects.filter(pk=hold.pk, status=Status.RELEASED).update(closed=True)
        hold.refresh_from_db()
    if hold.status == Status.CONFIRMED:
        raise HoldConfirmed()
    return hold


def _expire(hold_id: int, now: datetime) -> bool:
    """Release one hold if it is still held and still past its expiry (a renewal may have
    landed since it was found)."""
    with transaction.atomic():
        hold = SeatHold.objects.filter(pk=hold_id).values("show_id", "quantity").first()
        if hold is None:
            return False
        moved = SeatHold.objects.filter(pk=hold_id, status=Status.HELD, expires_at__lt=now).update(
            status=Status.RELEASED, updated_at=timezone.now()
        )
        if moved:
            Show.objects.filter(pk=hold["show_id"]).update(
                seats_held=F("seats_held") - hold["quantity"]
            )
        return bool(moved)


def holds_release_expired(*, now: datetime | None = None) -> int:
    """Release every hold past its expiry; the number released. One hold's error is logged
    and the sweep goes on."""
    now = now or timezone.now()
    released = 0
    expired = SeatHold.objects.filter(status=Status.HELD, expires_at__lt=now)
    for hold_id in list(expired.values_list("pk", flat=True)):
        try:
            released += _expire(hold_id, now)
        except Exception:
            logger.exception("hold %s: could not release it; the next sweep tries again", hold_id)
    if released:
        logger.info("released %d expired seat holds", released)
    return released
