from django.urls import path

from chaos.apis import ChaosApi

urlpatterns = [path("chaos/", ChaosApi.as_view(), name="chaos")]
