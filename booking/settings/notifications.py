"""The notifications service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS, service_database

SERVICE_NAME = "notifications"
INSTALLED_APPS = [*INSTALLED_APPS, "notifications"]
ROOT_URLCONF = "booking.urls.notifications"
DATABASES = {"default": service_database(SERVICE_NAME)}
SERVICE_DEPENDENCIES = []
