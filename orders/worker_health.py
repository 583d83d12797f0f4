"""The task worker's own health, asked of no database: a heartbeat file, and its metrics.

Kubernetes restarts a worker whose liveness probe fails, so that probe must not ask the
database: a PostgreSQL outage would otherwise restart every worker, the reconciler with them,
over and over. The heartbeat thread touches ``ORDERS_WORKER_ALIVE_FILE`` at every beat, whether
its write to the database worked or not (``beat``), and ``manage.py orders_worker_alive``
fails once the file is older than ``--max-age``: the heartbeat thread is stuck or gone.

With ``PROMETHEUS_MULTIPROC_DIR`` set (to orders' directory), the worker's calls, retries and
breaker transitions are written beside those of orders' gunicorn processes, and orders'
``/metrics`` reads them all (``started``). Its live gauges leave with it at a clean exit; those
of a SIGKILLed worker are swept by the next worker's start and beats (resilience.multiprocess).
"""

import logging
import time
from pathlib import Path

from django.conf import settings

from resilience import metrics, multiprocess

logger = logging.getLogger("orders.worker")


def alive_file() -> Path:
    return Path(settings.ORDERS_WORKER_ALIVE_FILE)


def touch(path: Path | None = None) -> bool:
    """Mark the worker alive now; False (and a log line) if the file cannot be written."""
    path = path or alive_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        logger.exception("could not touch the worker's alive file %s", path)
        return False
    return True


def age(path: Path | None = None, *, now: float | None = None) -> float | None:
    """Seconds since the last beat touched the file; None if no beat ever did."""
    try:
        touched = (path or alive_file()).stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - touched


def started() -> None:
    """At the worker's start, before its first call: metrics ready, and a first beat."""
    directory = multiprocess.directory()
    if directory:
        multiprocess.prepare(directory)  # the directory made, the gauges of dead workers swept
        multiprocess.mark_dead_at_exit(directory, flush=metrics.flush)
    touch()


def beat() -> None:
    """At every beat, whatever the database answered."""
    touch()
    directory = multiprocess.directory()
    if directory:
        try:
            multiprocess.mark_dead_processes(directory)
        except OSError:
            logger.exception("could not sweep the metric files of dead processes")


def serve_metrics(port: int, addr: str = "0.0.0.0"):
    """Serve the worker's own ``/metrics`` on ``port`` (compose and Kubernetes, where the worker
    runs in its own container and shares no metrics directory with orders' gunicorn): its
    calls, retries and breaker transitions, flushed every second by the resilience app.
    Returns the server (tests stop it)."""
    import os

    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client import multiprocess as prometheus_multiprocess

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    server, _ = start_http_server(port, addr=addr, registry=registry)
    logger.info("orders worker: metrics on %s:%s", addr, port)
    return server
