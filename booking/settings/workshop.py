"""Settings of the workshop commands (``manage.py stack|scenario|lab``): no service of its own."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "workshop"]
