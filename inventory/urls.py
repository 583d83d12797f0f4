from django.urls import path, register_converter

from inventory import apis


class OrderIdConverter:
    """An order id in a path: up to 64 characters, no slash and no NUL (PostgreSQL cannot take
    one: a 404, not a 500)."""

    regex = "[^/\x00]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(OrderIdConverter, "order_id")

urlpatterns = [
    path("api/shows/", apis.ShowListApi.as_view(), name="show-list"),
    path("api/shows/<int:show_id>/", apis.ShowDetailApi.as_view(), name="show-detail"),
    path("api/holds/", apis.HoldCreateApi.as_view(), name="hold-create"),
    path("api/holds/<order_id:order_id>/", apis.HoldDetailApi.as_view(), name="hold-detail"),
    path(
        "api/holds/<order_id:order_id>/confirm/", apis.HoldConfirmApi.as_view(), name="hold-confirm"
    ),
    path(
        "api/holds/<order_id:order_id>/release/", apis.HoldReleaseApi.as_view(), name="hold-release"
    ),
]
