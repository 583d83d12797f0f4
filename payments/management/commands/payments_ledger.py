import json

from django.core.management.base import BaseCommand

from payments.models import Charge


class Command(BaseCommand):
    help = "Every charge, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            list(Charge.objects.order_by("id").values("id", "order_id", "status", "amount")),
            default=str,
        )
