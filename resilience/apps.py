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

        setting_changed.connect(_reload_policies, dispatch_uid="resilience_reload_policies")
