"""Seat holds: every write is idempotent per order and cannot oversell, on SQLite or PostgreSQL.

Seat counts change only through conditional UPDATEs (``... WHERE seats_total >= held + sold + n``),
so two concurrent holds for the last seat cannot both succeed; a CHECK constraint backs it up.
A hold moves by an UPDATE conditioned on its current status (and, for expiry, on its expiry
time), so that each move happens once, whoever races it:

    held -> confirmed     the order paid: seats sold
    held -> released      the order failed (closed: for good), or the hold expired
    released -> held      re-held for its order after it expired, if seats are left (``rehold``)
"""

import enum
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
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


def _expiry():
    """The database's clock plus the TTL: the sweeper judges expiry by the same clock."""
    return ExpressionWrapper(
        Now() + timedelta(seconds=settings.SEAT_HOLD_TTL), output_field=DateTimeField()
    )


def _take_seats(show_id: int, quantity: int) -> bool:
    return bool(
        Show.objects.filter(
            pk=show_id, seats_total__gte=F("seats_held") + F("seats_sold") + quantity
        ).update(seats_held=F("seats_held") + quantity)
    )


def _no_seats(show_id: int) -> Exception:
    if not Show.objects.filter(pk=show_id).exists():
        return ShowNotFound()
    return SeatsUnavailable()


def hold_create(
    *, order_id: str, show_id: int, quantity: int, rehold: bool = False
) -> tuple[SeatHold, bool]:
    """Hold seats for an order; the same order again returns its hold and ``False``.

    Asking again renews a hold that is held, and answers whatever else it is (its ``status``
    says: confirmed, or released). With ``rehold``, a hold that expired is held again if
    seats are left (``SeatsUnavailable`` otherwise). A hold its order closed (released for
    good, or a release that came before any hold) is never held again: ``HoldClosed``.

    Concurrent repeats for one order meet at the hold's unique ``order_id``: the hold row is
    inserted before the seats are taken, so a second insert waits for the first transaction
    and then finds its hold, instead of missing it and finding the seats gone (a false
    "sold out" under PostgreSQL's READ COMMITTED).
    """
    existing = SeatHold.objects.filter(order_id=order_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                hold = SeatHold.objects.create(
                    order_id=order_id, show_id=show_id, quantity=quantity, expires_at=_expiry()
                )
                if not _take_seats(show_id, quantity):
                    raise _no_seats(show_id)  # and the hold row goes with the rollback
                return hold, True
        except IntegrityError:
            # Another request for the same order (or its release) won the race; it committed.
            existing = SeatHold.objects.filter(order_id=order_id).first()
            if existing is None:
                raise
    return _again(existing, show_id=show_id, quantity=quantity, rehold=rehold)


def _again(hold: SeatHold, *, show_id: int, quantity: int, rehold: bool) -> tuple[SeatHold, bool]:
    if hold.closed:
        raise HoldClosed()
    if hold.show_id != show_id or hold.quantity != quantity:
        raise HoldMismatch()
    if hold.status == Status.HELD:
        renewed = SeatHold.objects.filter(pk=hold.pk, status=Status.HELD).update(
            expires_at=_expiry(), updated_at=timezone.now()
        )
        if not renewed:  # released since it was read (swept, or closed): as if read so
            hold.refresh_from_db()
    if hold.status == Status.RELEASED and rehold:
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
    if hold.closed:  # closed by its order between the read and the rehold
        raise HoldClosed()
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


class Release(enum.StrEnum):
    """What a release did, in its answer (``outcome``)."""

    RELEASED = "released"  # the hold was held: its seats are given back now
    ALREADY_RELEASED = "already_released"  # it had expired or been released before
    TOMBSTONE = "tombstone"  # no hold yet: none will ever be taken for this order
    ABSENT = "absent"  # no hold, and not final: nothing to do


def _give_back(hold: SeatHold, **changes) -> bool:
    """held -> released (with ``changes``), and its seats back, as one conditional move."""
    moved = SeatHold.objects.filter(pk=hold.pk, status=Status.HELD).update(
        status=Status.RELEASED, updated_at=timezone.now(), **changes
    )
    if moved:
        Show.objects.filter(pk=hold.show_id).update(seats_held=F("seats_held") - hold.quantity)
    return bool(moved)


def hold_release(*, order_id: str, final: bool = False) -> tuple[SeatHold | None, Release]:
    """Give held seats back; ``(hold, what it did)``. Releasing twice is a no-op.

    ``final``: the order's last word (it failed). The hold is released and closed in one
    conditional statement, so that a re-hold racing it cannot slip between a release and a
    close; a hold already released is closed by another conditional statement, and if a
    re-hold moved it in between, the release goes round again. A final release that comes
    before any hold leaves a closed tombstone, so a late or replayed hold is refused.
    ``HoldConfirmed`` if the seats are sold: the order keeps them.
    """
    closing = {"closed": True} if final else {}
    for _ in range(5):
        with transaction.atomic():
            hold = SeatHold.objects.filter(order_id=order_id).first()
            if hold is None:
                if not final:
                    return None, Release.ABSENT
                try:
                    with transaction.atomic():
                        hold = SeatHold.objects.create(
                            order_id=order_id,
                            show=None,
                            quantity=0,
                            status=Status.RELEASED,
                            closed=True,
                            expires_at=Now(),
                        )
                    return hold, Release.TOMBSTONE
                except IntegrityError:
                    continue  # its hold landed meanwhile: release that one
            if _give_back(hold, **closing):
                hold.refresh_from_db()
                return hold, Release.RELEASED
            if final:
                was_released = SeatHold.objects.filter(pk=hold.pk, status=Status.RELEASED).update(
                    closed=True, updated_at=timezone.now()
                )
            else:
                hold.refresh_from_db()
                was_released = hold.status == Status.RELEASED
            hold.refresh_from_db()
            if was_released:
                return hold, Release.ALREADY_RELEASED
            if hold.status == Status.CONFIRMED:
                raise HoldConfirmed()
        # held again between the two statements: go round
    raise RuntimeError(f"hold {order_id}: could not release it in 5 rounds")


def _expire(hold_id: int, now) -> bool:
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
    """Release every hold past its expiry (by the database's clock, unless ``now``); the number
    released. One hold's error is logged and the sweep goes on."""
    now = now or Now()
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
