"""The notifications service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import (
    INSTALLED_APPS,
    RESILIENCE_NAMESPACE,
    internal_service_overrides,
    service_database,
)

SERVICE_NAME = "notifications"
INSTALLED_APPS = [*INSTALLED_APPS, "notifications"]
ROOT_URLCONF = "booking.urls.notifications"
DATABASES = {"default": service_database(SERVICE_NAME)}
RESILIENCE_NAMESPACE = f"{RESILIENCE_NAMESPACE}:{SERVICE_NAME}"
SERVICE_DEPENDENCIES = []
globals().update(internal_service_overrides())
