import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand

from orders import reconciler

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
        stop.wait(settings.ORDERS_WORKER_HEARTBEAT)


class Command(DbWorkerCommand):
    help = (
        "django-tasks-db's db_worker, plus a heartbeat and the reconciler: tasks left running "
        "by dead workers are reaped, and every unsettled order that no live task owns is queued."
    )

    def handle(self, *args, **options):
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
        try:
            return super().handle(*args, **{**options, "worker_id": worker_id})
        finally:
            stop.set()
