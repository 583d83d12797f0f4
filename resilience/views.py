import os

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from resilience.health import breaker_states


@require_GET
def metrics(request) -> HttpResponse:
    """Prometheus text format; summed across gunicorn workers when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@require_GET
def health(request) -> JsonResponse:
    """200 while this process works, whatever the state of its breakers, which it reports."""
    return JsonResponse({"status": "ok", "circuit_breakers": breaker_states()})
