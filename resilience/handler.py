"""``policies``: named policies built lazily, once per process, from ``RESILIENCE_POLICIES``.

Like ``django.core.cache.caches``, but one instance per process rather than per thread: a
bulkhead or a breaker only works if every thread of the process shares it.
"""

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from resilience import conf
from resilience.clock import clock
from resilience.pipeline import Policy


class InvalidPolicyError(ImproperlyConfigured):
    """No policy of that name is configured in ``RESILIENCE_POLICIES``."""


class PolicyHandler:
    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Policy:
        try:
            return self._policies[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._policies:
                self._policies[name] = self.create(name)
            return self._policies[name]

    def __contains__(self, name: str) -> bool:
        return name in conf.policy_names()

    def __iter__(self):
        return iter(conf.policy_names())

    def create(self, name: str) -> Policy:
        if name not in conf.policy_names():
            known = ", ".join(conf.policy_names()) or "none"
            raise InvalidPolicyError(
                f"No resilience policy named {name!r} in RESILIENCE_POLICIES (configured: {known})."
            )
        namespace = getattr(settings, "RESILIENCE_NAMESPACE", "resilience")
        # Never touches the network: a shared breaker state syncs with Redis in the background.
        return Policy(
            conf.build_config(name),
            clock=clock,
            namespace=namespace,
            storage_options=conf.link_options(),
        )

    def all(self, initialized_only: bool = False) -> list[Policy]:
        if initialized_only:
            return list(self._policies.values())
        return [self[name] for name in conf.policy_names()]

    def reset(self) -> None:
        """Forget every built policy; the next lookup builds it again from settings."""
        with self._lock:
            built, self._policies = self._policies, {}
        for policy in built.values():
            policy.close()
