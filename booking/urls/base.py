"""URLs every service has: health and liveness, metrics, the OpenAPI schema and its browsable docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from booking.health import health, livez
from resilience.views import metrics

urlpatterns = [
    path("health/", health, name="health"),
    path("livez/", livez, name="livez"),
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("chaos.urls")),
]

handler400 = "booking.errors.bad_request"
handler403 = "booking.errors.permission_denied"
handler404 = "booking.errors.not_found"
handler500 = "booking.errors.server_error"
