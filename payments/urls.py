from django.urls import path

from payments import apis

urlpatterns = [path("api/charges/", apis.ChargeApi.as_view(), name="charges")]
