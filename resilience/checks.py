from django.core import checks

from resilience import conf


@checks.register("resilience")
def check_policies(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every problem in ``RESILIENCE_POLICIES``, each naming the key at fault."""
    return [checks.Error(str(problem), id=problem.id) for problem in conf.validate()]


@checks.register("resilience")
def check_services(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``RESILIENCE_SERVICES``: base URLs, and a policy for each (and a service for each policy)."""
    services = conf.services()
    if not isinstance(services, dict):
        return [
            checks.Error(
                f"{conf.SERVICES_SETTING} must be a dict of name -> base URL.", id="resilience.E007"
            )
        ]
    messages: list[checks.CheckMessage] = []
    for name, url in services.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            messages.append(
                checks.Error(
                    f"{conf.SERVICES_SETTING}[{name!r}] must be an http(s) URL, got {url!r}.",
                    id="resilience.E007",
                )
            )
    raw = conf.raw_policies()
    policies = set(conf.policy_names(raw)) if isinstance(raw, dict) else set()
    for name in sorted(set(services) - policies):
        messages.append(
            checks.Warning(
                f"{conf.SERVICES_SETTING}[{name!r}] has no policy in {conf.SETTING}: "
                f"ServiceClient({name!r}) will fail.",
                hint=f"Add {conf.SETTING}[{name!r}] (it may be empty: the defaults apply).",
                id="resilience.W001",
            )
        )
    for name in sorted(policies - set(services)):
        messages.append(
            checks.Warning(
                f"{conf.SETTING}[{name!r}] has no base URL in {conf.SERVICES_SETTING}: only "
                f"plain code can use it (policies[{name!r}].call).",
                hint="Silence resilience.W002 if that is the intent.",
                id="resilience.W002",
            )
        )
    return messages


@checks.register("resilience")
def check_admission(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``RESILIENCE_ADMISSION``: admission control of incoming requests."""
    from resilience import admission

    return [checks.Error(problem, id="resilience.E009") for problem in admission.validate()]


@checks.register("resilience")
def check_redis(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``RESILIENCE_REDIS``: how processes talk to the Redis of shared breaker state."""
    return [checks.Error(problem.message, id=problem.id) for problem in conf.validate_redis()]
