from django.db import models


class IdempotencyRecord(models.Model):
    """The first request under a key, and the answer it got, so that a repeat gets the same answer."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        COMPLETED = "completed"

    key = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class Charge(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        DECLINED = "declined"

    order_id = models.CharField(max_length=64, db_index=True)
    # One charge per idempotency key, enforced by the database: two workers racing on a key
    # cannot both charge.
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    card_last4 = models.CharField(max_length=4)
    status = models.CharField(max_length=10, choices=Status.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"charge {self.pk} {self.amount} {self.currency} ({self.status})"


class Refund(models.Model):
    """A charge given back, once: one refund per charge, one per Idempotency-Key."""

    charge = models.OneToOneField(Charge, on_delete=models.PROTECT, related_name="refund")
    idempotency_key = models.CharField(max_length=255, unique=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reason = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"refund of charge {self.charge_id} ({self.amount})"
