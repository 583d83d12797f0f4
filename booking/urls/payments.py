from django.urls import include, path

from booking.urls.base import handler400, handler403, handler404, handler500  # noqa: F401
from booking.urls.base import urlpatterns as common

urlpatterns = [*common, path("", include("payments.urls"))]
