import json

from django.core.management.base import BaseCommand

from inventory.models import SeatHold, Show


class Command(BaseCommand):
    help = "Every show's seat counts and every seat hold, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            {
                "shows": list(
                    Show.objects.order_by("id").values(
                        "id", "price", "seats_total", "seats_held", "seats_sold"
                    )
                ),
                "holds": list(
                    SeatHold.objects.order_by("id").values(
                        "order_id", "show_id", "quantity", "status", "closed"
                    )
                ),
            },
            default=str,
        )
