import json

from django.core.management.base import BaseCommand

from notifications.models import Notification


class Command(BaseCommand):
    help = "Every notification sent, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(list(Notification.objects.order_by("id").values("order_id", "kind")))
