from django.db import models


class Notification(models.Model):
    class Kind(models.TextChoices):
        ORDER_CONFIRMED = "order_confirmed"

    order_id = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    email = models.EmailField()
    subject = models.CharField(max_length=200)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sent_at", "id"]
        constraints = [
            # At most one notification of a kind per order, whoever asks and however often.
            models.UniqueConstraint(
                fields=["order_id", "kind"], name="one_notification_per_order_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.order_id}"
