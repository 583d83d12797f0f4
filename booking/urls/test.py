"""Every service's API under its own prefix, for tests that run them all on one live server."""

from django.urls import include, path

from booking.urls.base import handler400, handler403, handler404, handler500  # noqa: F401
from booking.urls.base import urlpatterns as common

SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")

urlpatterns = [*common, *(path(f"{name}/", include(f"{name}.urls")) for name in SERVICES)]
