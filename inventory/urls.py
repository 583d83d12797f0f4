from django.urls import path

from inventory import apis

urlpatterns = [
    path("api/shows/", apis.ShowListApi.as_view(), name="show-list"),
    path("api/shows/<int:show_id>/", apis.ShowDetailApi.as_view(), name="show-detail"),
    path("api/holds/", apis.HoldCreateApi.as_view(), name="hold-create"),
    path("api/holds/<str:order_id>/", apis.HoldDetailApi.as_view(), name="hold-detail"),
    path("api/holds/<str:order_id>/confirm/", apis.HoldConfirmApi.as_view(), name="hold-confirm"),
    path("api/holds/<str:order_id>/release/", apis.HoldReleaseApi.as_view(), name="hold-release"),
]
