import json

from django.core.management.base import BaseCommand
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from orders import reconciler
from orders.models import Order


class Command(BaseCommand):
    help = (
        "Every order with its status and what is left to do, the unsettled orders no live task "
        "owns, and the tasks left running by dead workers, as JSON (for audits)."
    )

    def handle(self, *args, **options):
        running = {
            str(pk): ids[-1] if ids else ""
            for pk, ids in DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).values_list(
                "id", "worker_ids"
            )
        }
        dead = reconciler.dead_workers(set(running.values()))
        return json.dumps(
            {
                "orders": [
                    {
                        "id": str(order.id),
                        "status": order.status,
                        "failure_code": order.failure_code,
                        "show_id": order.show_id,
                        "quantity": order.quantity,
                        "settled": order.settled,
                        "refunded": order.refunded,
                        "payment_attempts": order.payment_attempts,
                        "amount": None if order.amount is None else str(order.amount),
                        "charge_id": order.charge_id,
                        "refund_id": order.refund_id,
                        "parked_reason": order.parked_reason,
                    }
                    for order in Order.objects.order_by("created_at")
                ],
                "stuck": reconciler.orders_without_a_live_task(),
                "orphaned_running_tasks": sorted(
                    task for task, worker in running.items() if worker in dead or not worker
                ),
            }
        )
