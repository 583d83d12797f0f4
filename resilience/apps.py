import os

from django.apps import AppConfig
from django.core.signals import setting_changed


def _reload_policies(*, setting, **kwargs) -> None:
    if setting in (
        "RESILIENCE_POLICIES",
        "RESILIENCE_SERVICES",
        "RESILIENCE_NAMESPACE",
        "RESILIENCE_REDIS",
    ):
        from resilience import policies

        policies.reset()


class ResilienceConfig(AppConfig):
    name = "resilience"
    verbose_name = "Resilience between services"

    def ready(self) -> None:
        from resilience import checks  # noqa: F401  registers the system checks

        # prometheus_client opens its file at the first metric with a value, an unlabelled one
        # at import (chaos's, when the URLs load for the system checks): in a process that no
        # gunicorn started (the task worker), nobody would have made the directory yet.
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            os.makedirs(directory, exist_ok=True)

        setting_changed.connect(_reload_policies, dispatch_uid="resilience_reload_policies")
