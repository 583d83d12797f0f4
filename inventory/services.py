"""Seat holds: every write is idempotent per order and cannot oversell, on SQLite or PostgreSQL.

Seat counts change only through conditional UPDATEs (``... WHERE seats_total >= held + sold + n``),
so two concurrent holds for the last seat cannot both succeed; a CHECK constraint backs it up.
A hold moves held -> confirmed or held -> released exactly once, by an UPDATE conditioned on
its current status.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from inventory.exceptions import (
    HoldConfirmed,
    HoldMismatch,
    HoldNotFound,
    HoldReleased,
    SeatsUnavailable,
    ShowNotFound,
)
from inventory.models import SeatHold, Show

logger = logging.getLogger(__name__)


def _expiry() -> datetime:
    return timezone.now() + timedelta(seconds=settings.SEAT_HOLD_TTL)


def hold_create(*, order_id: str, show_id: int, quantity: int) -> tuple[SeatHold, bool]:
    """Hold seats for an order; the same order again returns its hold (renewed) and ``False``."""
    try:
        with transaction.atomic():
            existing = SeatHold.objects.filter(order_id=order_id).first()
            if existing is not None:
                return _replay(existing, show_id=show_id, quantity=quantity), False
            taken = Show.objects.filter(
                pk=show_id, seats_total__gte=F("seats_held") + F("seats_sold") + quantity
            ).update(seats_held=F("seats_held") + quantity)
            if not taken:
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
        return _replay(existing, show_id=show_id, quantity=quantity), False


def _replay(hold: SeatHold, *, show_id: int, quantity: int) -> SeatHold:
    if hold.show_id != show_id or hold.quantity != quantity:
        raise HoldMismatch()
    if hold.status == SeatHold.Status.HELD:
        SeatHold.objects.filter(pk=hold.pk, status=SeatHold.Status.HELD).update(
            expires_at=_expiry()
        )
        hold.refresh_from_db()
    return hold


def hold_confirm(*, order_id: str) -> SeatHold:
    """Turn held seats into sold seats; confirming twice is a no-op."""
    with transaction.atomic():
        hold = SeatHold.objects.filter(order_id=order_id).first()
        if hold is None:
            raise HoldNotFound()
        moved = SeatHold.objects.filter(pk=hold.pk, status=SeatHold.Status.HELD).update(
            status=SeatHold.Status.CONFIRMED, updated_at=timezone.now()
        )
        if moved:
            Show.objects.filter(pk=hold.show_id).update(
                seats_held=F("seats_held") - hold.quantity,
                seats_sold=F("seats_sold") + hold.quantity,
            )
        hold.refresh_from_db()
    if hold.status == SeatHold.Status.RELEASED:
        raise HoldReleased()
    return hold


def hold_release(*, order_id: str) -> SeatHold | None:
    """Give held seats back; releasing twice, or an order that never held, is a no-op."""
    with transaction.atomic():
        hold = SeatHold.objects.filter(order_id=order_id).first()
        if hold is None:
            return None
        moved = SeatHold.objects.filter(pk=hold.pk, status=SeatHold.Status.HELD).update(
            status=SeatHold.Status.RELEASED, updated_at=timezone.now()
        )
        if moved:
            Show.objects.filter(pk=hold.show_id).update(seats_held=F("seats_held") - hold.quantity)
        hold.refresh_from_db()
    if hold.status == SeatHold.Status.CONFIRMED:
        raise HoldConfirmed()
    return hold


def holds_release_expired(*, now: datetime | None = None) -> int:
    """Release every hold past its expiry; the number released."""
    now = now or timezone.now()
    released = 0
    for order_id in SeatHold.objects.filter(
        status=SeatHold.Status.HELD, expires_at__lt=now
    ).values_list("order_id", flat=True):
        hold = hold_release(order_id=order_id)
        released += hold is not None
    if released:
        logger.info("released %d expired seat holds", released)
    return released
