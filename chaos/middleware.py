from django.conf import settings

from chaos import faults, store

# A liveness probe is never faulted: a fault would make Kubernetes restart the pods it is
# meant to show failing.
EXEMPT = ("/chaos/", "/metrics", "/livez/")


class ChaosMiddleware:
    """Injects the fault set through ``/chaos/`` into every matching request of this service."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if not settings.CHAOS_ENABLED or request.path.startswith(EXEMPT):
            return self.get_response(request)
        fault = store.current()
        faults.active.set(1 if fault else 0)
        if not fault or not faults.matches(fault, request):
            return self.get_response(request)
        refused = faults.before(fault)
        if refused is not None:
            return refused
        response = self.get_response(request)
        faults.after(fault)
        return response
