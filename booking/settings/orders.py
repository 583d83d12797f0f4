"""The orders service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import (
    INSTALLED_APPS,
    RESILIENCE_NAMESPACE,
    internal_service_overrides,
    service_database,
)

SERVICE_NAME = "orders"
INSTALLED_APPS = [*INSTALLED_APPS, "orders"]
ROOT_URLCONF = "booking.urls.orders"
DATABASES = {"default": service_database(SERVICE_NAME)}
RESILIENCE_NAMESPACE = f"{RESILIENCE_NAMESPACE}:{SERVICE_NAME}"
SERVICE_DEPENDENCIES = ["inventory", "payments", "notifications", "recommendations"]
globals().update(internal_service_overrides())
# What each endpoint calls, in order: the timeout-budget check (manage.py budgets) reads this.
CALL_PATHS = {
    "POST /api/orders/": ["inventory", "payments", "inventory", "notifications"],
    "GET /api/orders/{id}/": [],
}
