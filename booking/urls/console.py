"""The control room's service: its own pages and API, nothing of the shop."""

from django.urls import include, path

from booking.health import livez

urlpatterns = [
    path("livez/", livez, name="livez"),
    path("", include("workshop.console.urls")),
]

handler404 = "booking.errors.not_found"
handler500 = "booking.errors.server_error"
