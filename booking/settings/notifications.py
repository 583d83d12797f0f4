"""The notifications service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS, RESILIENCE_NAMESPACE, service_database

SERVICE_NAME = "notifications"
INSTALLED_APPS = [*INSTALLED_APPS, "notifications"]
ROOT_URLCONF = "booking.urls.notifications"
DATABASES = {"default": service_database(SERVICE_NAME)}
RESILIENCE_NAMESPACE = f"{RESILIENCE_NAMESPACE}:{SERVICE_NAME}"
SERVICE_DEPENDENCIES = []

# An internal service: reached only over the private network by the other services, in plain
# HTTP. Redirecting it to HTTPS would break every caller.
if PRODUCTION:  # noqa: F405
    SECURE_SSL_REDIRECT = False
    SECURE_HSTS_SECONDS = 0
    SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008"]
