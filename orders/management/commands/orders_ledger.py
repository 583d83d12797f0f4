import json

from django.core.management.base import BaseCommand

from orders.models import Order


class Command(BaseCommand):
    help = "Every order with its status and what is left to do, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            [
                {
                    "id": str(order.id),
                    "status": order.status,
                    "show_id": order.show_id,
                    "quantity": order.quantity,
                    "settled": order.settled,
                    "payment_attempts": order.payment_attempts,
                }
                for order in Order.objects.order_by("created_at")
            ]
        )
