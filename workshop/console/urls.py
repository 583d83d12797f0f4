from django.urls import path

from workshop.console import views

app_name = "console"
urlpatterns = [
    path("", views.page, name="page"),
    path("health/", views.health, name="health"),
    path("sign-in/", views.sign_in, name="sign-in"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("api/state", views.state, name="state"),
    path("api/faults/", views.lift_all, name="faults"),
    path("api/faults/<str:service>/", views.fault, name="fault"),
    path("api/services/<str:name>/<str:action>", views.process, name="process"),
    path("api/stack/resilience", views.resilience, name="resilience"),
    path("api/scenarios/", views.scenarios, name="scenarios"),
    path("api/scenarios/<str:name>/run", views.run_scenario, name="run-scenario"),
    path("api/scenarios/results/<str:filename>", views.scenario_result, name="scenario-result"),
]
