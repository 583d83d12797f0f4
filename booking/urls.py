from django.urls import path

from resilience import views as resilience_views

urlpatterns = [
    path("health/", resilience_views.health, name="health"),
    path("metrics", resilience_views.metrics, name="metrics"),
]
