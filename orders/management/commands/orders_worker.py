import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand
from django_tasks_db.management.commands.db_worker import Worker

from orders import reconciler, worker_health

logger = logging.getLogger("orders.worker")


def _keep_alive(worker_id: str, stop: threading.Event) -> None:
    """Beat, and reconcile every ORDERS_RECONCILE_INTERVAL, until the worker stops."""
    next_reconcile = 0.0
    while not stop.is_set():
        try:
            reconciler.beat(worker_id)
            if time.monotonic() >= next_reconcile:
                reconciler.reconcile()
                next_reconcile = time.monotonic() + settings.ORDERS_RECONCILE_INTERVAL
        except Exception:  # the database away, say: try again at the next beat
            logger.exception("heartbeat or reconcile failed")
        finally:
            close_old_connections()
            worker_health.beat()  # every beat, even when the database write failed
        stop.wait(settings.ORDERS_WORKER_HEARTBEAT)


class FencedWorker(Worker):
    """django-tasks-db's worker, whose verdict on a task holds only while the task is still
    RUNNING under this worker: a reaped task's FAILED stands (``reconciler.fence_task_result``)."""

    def run_task(self, db_task_result) -> None:
        reconciler.fence_task_result(db_task_result, self.worker_id)
        super().run_task(db_task_result)


class Command(DbWorkerCommand):
    help = (
        "django-tasks-db's db_worker, plus a heartbeat and the reconciler: tasks left running "
        "by dead workers are reaped, and every unsettled order that no live task owns is queued."
    )

    def handle(self, *args, **options):
        worker_health.started()
        if settings.ORDERS_WORKER_METRICS_PORT:  # its own container: no /metrics of orders'
            worker_health.serve_metrics(settings.ORDERS_WORKER_METRICS_PORT)
        worker_id = reconciler.new_worker_id()
        reconciler.beat(worker_id)  # before any task is claimed under this id
        logger.info(
            "orders worker %s: reconciling every %s s",
            worker_id,
            settings.ORDERS_RECONCILE_INTERVAL,
        )
        stop = threading.Event()
        threading.Thread(
            target=_keep_alive, args=(worker_id, stop), name="orders-heartbeat", daemon=True
        ).start()
        self.configure_logging(options["verbosity"])
        worker = FencedWorker(
            queue_names=options["queue_name"].split(","),
            interval=options["interval"],
            batch=options["batch"],
            backend_name=options["backend_name"],
            startup_delay=options["startup_delay"],
            max_tasks=options["max_tasks"],
            worker_id=worker_id,
            excluded_queue_names=[],
        )
        worker.configure_signals()
        try:
            worker.run()
        finally:
            stop.set()
