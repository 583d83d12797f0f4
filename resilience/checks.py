from django.conf import settings
from django.core import checks

from resilience import conf


@checks.register("resilience")
def check_policies(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every problem in ``RESILIENCE_POLICIES``, each naming the key at fault."""
    errors: list[checks.CheckMessage] = [
        checks.Error(str(problem), id=problem.id) for problem in conf.validate()
    ]
    services = getattr(settings, "SERVICES", {})
    if not isinstance(services, dict):
        errors.append(
            checks.Error("SERVICES must be a dict of name -> base URL.", id="resilience.E007")
        )
    else:
        for name, url in services.items():
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                errors.append(
                    checks.Error(
                        f"SERVICES[{name!r}] must be an http(s) URL, got {url!r}.",
                        id="resilience.E007",
                    )
                )
    return errors
