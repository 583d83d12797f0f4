"""``/health/`` (readiness): this service's own status, its database and its circuit breakers.
``/livez/`` (liveness): the process answers, and nothing else is asked.

A database outage must take the pods out of the Service, never restart them all: Kubernetes
reads readiness from ``/health/`` and liveness from ``/livez/``.
"""

import os

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from resilience.health import breaker_states


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


@require_GET
def health(request):
    """200 while the service itself works, even with a breaker open; 503 if its database is gone."""
    database = _database_ok()
    body = {
        "service": settings.SERVICE_NAME,
        # Which gunicorn worker answered: two reads of /health/ may come from two processes,
        # each with its own breakers (memory storage).
        "worker": os.getpid(),
        "status": "ok" if database else "degraded",
        "database": "ok" if database else "unavailable",
        "circuit_breakers": breaker_states(getattr(settings, "SERVICE_DEPENDENCIES", None)),
    }
    return JsonResponse(body, status=200 if database else 503)


@require_GET
def livez(request):
    """200 from the process itself: no database, no Redis, no call out (a liveness probe)."""
    return HttpResponse("ok\n", content_type="text/plain")
