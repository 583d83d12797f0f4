import hashlib

from django.db import IntegrityError, transaction
from django.db.models import F

from recommendations.models import Booking, CoBooking


def customer_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _bump(show_id: int, other_show_id: int, by: int = 1) -> None:
    updated = CoBooking.objects.filter(show_id=show_id, other_show_id=other_show_id).update(
        count=F("count") + by
    )
    if not updated:
        try:
            with transaction.atomic():
                CoBooking.objects.create(show_id=show_id, other_show_id=other_show_id, count=by)
        except IntegrityError:
            CoBooking.objects.filter(show_id=show_id, other_show_id=other_show_id).update(
                count=F("count") + by
            )


def cobooking_add(*, show_id: int, other_show_id: int, count: int = 1) -> None:
    """Count ``count`` customers who booked both shows (both directions)."""
    if show_id == other_show_id:
        return
    _bump(show_id, other_show_id, count)
    _bump(other_show_id, show_id, count)


def booking_record(*, order_id: str, email: str, show_id: int) -> bool:
    """Record a confirmed booking and update co-booking counts; once per order."""
    customer = customer_key(email)
    try:
        with transaction.atomic():
            Booking.objects.create(order_id=order_id, customer=customer, show_id=show_id)
            others = set(
                Booking.objects.filter(customer=customer)
                .exclude(show_id=show_id)
                .values_list("show_id", flat=True)
            )
            already = Booking.objects.filter(customer=customer, show_id=show_id).count() > 1
            if not already:
                for other in others:
                    cobooking_add(show_id=show_id, other_show_id=other)
    except IntegrityError:
        return False
    return True
