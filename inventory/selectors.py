from django.db.models import QuerySet

from inventory.exceptions import HoldNotFound, ShowNotFound
from inventory.models import SeatHold, Show


def show_list() -> QuerySet[Show]:
    return Show.objects.select_related("venue")


def show_get(*, show_id: int) -> Show:
    try:
        return Show.objects.select_related("venue").get(pk=show_id)
    except Show.DoesNotExist:
        raise ShowNotFound() from None


def hold_get(*, order_id: str) -> SeatHold:
    try:
        return SeatHold.objects.select_related("show").get(order_id=order_id)
    except SeatHold.DoesNotExist:
        raise HoldNotFound() from None
