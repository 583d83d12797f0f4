import json

from django.core.management.base import BaseCommand

from inventory.models import Show


class Command(BaseCommand):
    help = "Every show's seat counts, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            list(
                Show.objects.order_by("id").values("id", "seats_total", "seats_held", "seats_sold")
            )
        )
