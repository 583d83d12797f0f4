"""The gateway service."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS, RESILIENCE_NAMESPACE, service_database

SERVICE_NAME = "gateway"
INSTALLED_APPS = [*INSTALLED_APPS, "gateway"]
ROOT_URLCONF = "booking.urls.gateway"
DATABASES = {"default": service_database(SERVICE_NAME)}
RESILIENCE_NAMESPACE = f"{RESILIENCE_NAMESPACE}:{SERVICE_NAME}"

# Shared by every worker process of the gateway: the recommendations cache and the catalogue.
if not env_str("CACHE_URL"):  # noqa: F405
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache" / "gateway"),  # noqa: F405
        }
    }
SERVICE_DEPENDENCIES = ["inventory", "recommendations", "orders"]
# The edge: anyone can send X-Deadline-Remaining-Ms here, so it is not a caller's deadline.
RESILIENCE_TRUST_DEADLINE_HEADER = False
# What each endpoint calls, in order: the timeout-budget check (manage.py budgets) reads this.
CALL_PATHS = {
    "GET /api/shows/": ["inventory"],
    "GET /api/shows/{id}/": ["inventory"],
    "GET /api/shows/{id}/recommendations/": ["recommendations", "inventory"],
    "POST /api/orders/": ["orders"],
    "GET /api/orders/{id}/": ["orders"],
}
