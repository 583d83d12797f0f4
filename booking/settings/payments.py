"""The payments service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS, service_database

SERVICE_NAME = "payments"
INSTALLED_APPS = [*INSTALLED_APPS, "payments"]
ROOT_URLCONF = "booking.urls.payments"
DATABASES = {"default": service_database(SERVICE_NAME)}
SERVICE_DEPENDENCIES = []
