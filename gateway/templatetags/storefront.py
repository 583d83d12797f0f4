"""Filters of the storefront's pages."""

from django import template
from django.utils import dateformat, timezone
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def showtime(value: str) -> str:
    """``"2027-02-14T19:30:00Z"`` (as inventory's API gives it) -> ``"Sunday 14 February 2027,
    19:30"``, in the site's time zone; anything unparseable is shown as it came."""
    when = parse_datetime(value) if isinstance(value, str) else value
    if when is None:
        return value
    if timezone.is_aware(when):
        when = timezone.localtime(when)
    return dateformat.format(when, "l j F Y, H:i")
