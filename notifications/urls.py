from django.urls import path

from notifications import apis

urlpatterns = [path("api/notifications/", apis.NotificationApi.as_view(), name="notifications")]
