import logging
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

logger = logging.getLogger(__name__)


class _Guarded:
    """A service's own collector, kept from failing the scrape: if it raises (its database is
    down, say), its series are left out of this scrape and the rest are served."""

    def __init__(self, collector) -> None:
        self.collector = collector

    def collect(self):
        try:
            return list(self.collector.collect())
        except Exception:
            logger.exception("%s failed: its series are left out of this scrape", self.collector)
            return []


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
    # The service's own series, read at scrape time (orders' parked orders, say).
    own = CollectorRegistry(auto_describe=False)
    for collector in resilience_metrics.registered_collectors():
        own.register(_Guarded(collector))
    body = generate_latest(registry) + generate_latest(own)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
