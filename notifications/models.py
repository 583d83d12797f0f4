from django.db import models
from django.utils import timezone


class Notification(models.Model):
    """One message to a customer, written before it is sent (the intent) and marked once the
    mail backend took it. Its Message-ID is stable, so that a message sent twice (a crash
    between the two) is one message to every mail client and visible to an audit."""

    class Kind(models.TextChoices):
        ORDER_CONFIRMED = "order_confirmed"
        ORDER_REFUNDED = "order_refunded"

    class Status(models.TextChoices):
        SENDING = "sending"  # intent committed; handed to the mail backend or not, unknown
        SENT = "sent"

    order_id = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    email = models.EmailField()
    subject = models.CharField(max_length=200)
    message_id = models.CharField(max_length=200, default="")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the current attempt to send began; another may take over after SEND_LEASE.
    attempt_started_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # At most one notification of a kind per order, whoever asks and however often.
            models.UniqueConstraint(
                fields=["order_id", "kind"], name="one_notification_per_order_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.order_id} ({self.status})"
