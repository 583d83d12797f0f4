from django.urls import path

from recommendations import apis

urlpatterns = [
    path(
        "api/recommendations/<int:show_id>/",
        apis.RecommendationsApi.as_view(),
        name="recommendations",
    ),
    path("api/bookings/", apis.BookingApi.as_view(), name="bookings"),
]
