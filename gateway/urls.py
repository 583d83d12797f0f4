from django.urls import path

from gateway import apis, views

urlpatterns = [
    path("", views.show_list, name="show-list-page"),
    path("shows/<int:show_id>/", views.show_detail, name="show-page"),
    path("orders/<uuid:order_id>/", views.order_page, name="order-page"),
    path("api/shows/", apis.ShowListApi.as_view(), name="api-show-list"),
    path("api/shows/<int:show_id>/", apis.ShowDetailApi.as_view(), name="api-show-detail"),
    path(
        "api/shows/<int:show_id>/recommendations/",
        apis.ShowRecommendationsApi.as_view(),
        name="api-show-recommendations",
    ),
    path("api/orders/", apis.OrderCreateApi.as_view(), name="api-order-create"),
    path("api/orders/<uuid:order_id>/", apis.OrderDetailApi.as_view(), name="api-order-detail"),
]
