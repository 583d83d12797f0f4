"""Some process always owns unfinished work, even after a SIGKILL at any line.

The task worker (``manage.py orders_worker``) writes a heartbeat every
``ORDERS_WORKER_HEARTBEAT`` seconds, and every ``ORDERS_RECONCILE_INTERVAL`` it reconciles:

1. **Reap.** A task that a worker claimed stays RUNNING in django-tasks-db's table forever if
   that worker dies (django-tasks-db issue #5, open upstream). A RUNNING task whose worker is
   dead (its heartbeat older than ``ORDERS_WORKER_DEAD_AFTER``, or its process gone from this
   host) is marked failed, so that nothing waits on it.
2. **Hand over.** Every order that is not settled and that no live task owns (queued, or
   running on a live worker) gets a task.

Both are cheap: they read the unsettled orders and the live tasks, a few rows. Parked orders
are owned by staff, not by a task: they are left alone.

Every age is the database's clock (``Now()``): a heartbeat is written with it and judged with
it, so two workers on hosts whose clocks disagree never reap each other by mistake. A task the
reaper marked failed stays failed: the worker that ran it, should it wake up (it was paused,
not dead), cannot mark it successful (``fence_task_result``), and its writes to the order are
fenced off by the order's own token (``orders.lifecycle.claim``).
"""

import logging
import os
import secrets
import socket
import traceback
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import retry

from orders.models import PARKED, SETTLED, Order, WorkerHeartbeat

logger = logging.getLogger(__name__)
SETTLE_TASK = "orders.tasks.settle_order"
HOST = socket.gethostname()


class WorkerDied(Exception):
    """The worker running this task stopped beating: it was killed, or its host was lost."""


def new_worker_id() -> str:
    """``host:pid:random``: unique, and enough to tell on this host whether it still runs."""
    return f"{HOST[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def _db_ago(seconds: float):
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


def beat(worker_id: str) -> None:
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"host": HOST, "pid": os.getpid(), "beat_at": Now()},
    )


def _process_gone(worker_id: str) -> bool:
    """Whether ``worker_id`` ran on this host in a process that no longer exists."""
    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False  # a process with that pid exists: maybe ours, maybe a new one (the heartbeat says)


def dead_workers(worker_ids: set[str]) -> set[str]:
    """The workers among ``worker_ids`` that are dead."""
    if not worker_ids:
        return set()
    horizon = _db_ago(settings.ORDERS_WORKER_DEAD_AFTER)
    beating = set(
        WorkerHeartbeat.objects.filter(worker_id__in=worker_ids, beat_at__gte=horizon).values_list(
            "worker_id", flat=True
        )
    )
    return {w for w in worker_ids if w not in beating or _process_gone(w)}


def reap() -> int:
    """Mark failed every RUNNING task whose worker is dead; how many."""
    running = list(
        DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).values_list("id", "worker_ids")
    )
    dead = dead_workers({ids[-1] for _, ids in running if ids})
    reaped = 0
    for task_id, worker_ids in running:
        if worker_ids and worker_ids[-1] not in dead:
            continue
        with transaction.atomic():
            reaped += DBTaskResult.objects.filter(
                pk=task_id, status=TaskResultStatus.RUNNING
            ).update(
                status=TaskResultStatus.FAILED,
                finished_at=Now(),
                exception_class_path=f"{__name__}.WorkerDied",
                traceback=f"WorkerDied: worker {worker_ids[-1] if worker_ids else '?'} stopped "
                "beating while it ran this task; reaped by the reconciler.\n",
            )
    if reaped:
        logger.warning("reaped %d task(s) left running by dead workers", reaped)
    return reaped


def orders_without_a_live_task() -> list[str]:
    """Unsettled orders that no queued task, and no task running on a live worker, owns."""
    unsettled = {
        str(pk)
        for pk in Order.objects.exclude(SETTLED).exclude(PARKED).values_list("id", flat=True)
    }
    if not unsettled:
        return []
    live = DBTaskResult.objects.filter(
        task_path=SETTLE_TASK, status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING]
    ).values_list("args_kwargs", "status", "worker_ids")
    owned = set()
    running_on: dict[str, str] = {}
    for args_kwargs, status, worker_ids in live:
        order_id = (args_kwargs.get("args") or [None])[0]
        if status == TaskResultStatus.RUNNING and worker_ids:
            running_on[order_id] = worker_ids[-1]
        else:
            owned.add(order_id)
    dead = dead_workers(set(running_on.values()))
    owned |= {order_id for order_id, worker in running_on.items() if worker not in dead}
    return sorted(unsettled - owned)


def reconcile() -> dict[str, int]:
    """Reap the tasks of dead workers, then queue a pass for every order no live task owns."""
    from orders.services import schedule

    reaped = reap()
    handed = 0
    for order in Order.objects.filter(pk__in=orders_without_a_live_task()):
        schedule(order, delay=0)
        handed += 1
    if handed:
        logger.warning("queued %d unsettled order(s) that no live task owned", handed)
    WorkerHeartbeat.objects.filter(beat_at__lt=_db_ago(86400)).delete()
    return {"reaped": reaped, "queued": handed}


def fence_task_result(result: DBTaskResult, worker_id: str) -> None:
    """Make the worker's verdict on ``result`` conditional: written only while the task is
    still RUNNING under ``worker_id``. django-tasks-db's own ``set_successful`` and
    ``set_failed`` save unconditionally, and would overwrite the reaper's FAILED when a paused
    worker wakes up and finishes a task that was reaped (and handed to another) meanwhile."""

    @retry()  # as django-tasks-db's own: a locked SQLite (OperationalError) is tried again
    def finish(status: str, **values) -> None:
        won = DBTaskResult.objects.filter(
            pk=result.pk, status=TaskResultStatus.RUNNING, worker_ids=list(result.worker_ids)
        ).update(status=status, finished_at=Now(), **values)
        if won:
            result.status = status
        else:
            result.refresh_from_db(fields=["status"])
            logger.warning(
                "task %s finished on worker %s after it was reaped (%s): the reaper's verdict "
                "stands",
                result.pk,
                worker_id,
                result.status,
            )

    def set_successful(return_value) -> None:
        finish(
            TaskResultStatus.SUCCESSFUL,
            return_value=return_value,
            exception_class_path="",
            traceback="",
        )

    def set_failed(exc: BaseException) -> None:
        finish(
            TaskResultStatus.FAILED,
            return_value=None,
            exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback="".join(traceback.format_exception(exc)),
        )

    result.set_successful = set_successful
    result.set_failed = set_failed
