import os

from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from resilience import metrics as resilience_metrics


@require_GET
def metrics(request) -> HttpResponse:
    """Prometheus text format; summed across gunicorn workers when ``PROMETHEUS_MULTIPROC_DIR`` is set.

    This process's counts are flushed first; other workers' may lag by one flush interval.
    """
    resilience_metrics.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
