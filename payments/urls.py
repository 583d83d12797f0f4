from django.urls import path

from payments import apis

urlpatterns = [
    path("api/charges/", apis.ChargeApi.as_view(), name="charges"),
    path("api/charges/cancel/", apis.ChargeCancelApi.as_view(), name="charge-cancel"),
    path("api/refunds/", apis.RefundApi.as_view(), name="refunds"),
]
