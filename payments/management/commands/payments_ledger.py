import json

from django.core.management.base import BaseCommand

from payments.models import Charge, IdempotencyRecord


class Command(BaseCommand):
    help = (
        "Every charge, whether and by how much it was refunded, and every request still in "
        "flight under its idempotency key, as JSON (for audits)."
    )

    def handle(self, *args, **options):
        return json.dumps(
            {
                "charges": [
                    {
                        "id": charge["id"],
                        "order_id": charge["order_id"],
                        "status": charge["status"],
                        "amount": charge["amount"],
                        "refund_id": charge["refund__id"],
                        "refund_amount": charge["refund__amount"],
                        "refunded": charge["refund__id"] is not None,
                    }
                    for charge in Charge.objects.order_by("id").values(
                        "id", "order_id", "status", "amount", "refund__id", "refund__amount"
                    )
                ],
                # A charge or refund begun and never answered (its process died, or it is
                # running now): nothing charged yet, until a retry under the key takes it over.
                "in_flight": list(
                    IdempotencyRecord.objects.filter(state=IdempotencyRecord.State.IN_FLIGHT)
                    .order_by("id")
                    .values("key", "created_at", "updated_at")
                ),
            },
            default=str,
        )
