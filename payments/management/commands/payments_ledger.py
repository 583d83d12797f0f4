import json

from django.core.management.base import BaseCommand

from payments.models import Charge


class Command(BaseCommand):
    help = "Every charge, and whether it was refunded, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            [
                {**charge, "refunded": charge["refund__id"] is not None}
                for charge in Charge.objects.order_by("id").values(
                    "id", "order_id", "status", "amount", "refund__id"
                )
            ],
            default=str,
        )
