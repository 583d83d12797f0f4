from django.urls import path

from orders import apis

urlpatterns = [
    path("api/orders/", apis.OrderCreateApi.as_view(), name="order-create"),
    path("api/orders/<uuid:order_id>/", apis.OrderDetailApi.as_view(), name="order-detail"),
]
