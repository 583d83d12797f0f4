import uuid

from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # being placed right now
        CONFIRMED = "confirmed"
        PAYMENT_PENDING = "payment_pending"  # seats held, the worker retries the charge
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The client's Idempotency-Key: the same key always means the same order.
    idempotency_key = models.CharField(max_length=255, unique=True)
    request_fingerprint = models.CharField(max_length=64)
    show_id = models.PositiveIntegerField()
    quantity = models.PositiveIntegerField()
    email = models.EmailField()
    card_token = models.CharField(max_length=64)
    show_title = models.CharField(max_length=200, blank=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    currency = models.CharField(max_length=3, default="EUR")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_code = models.CharField(max_length=64, blank=True)
    charge_id = models.PositiveBigIntegerField(null=True)
    payment_attempts = models.PositiveIntegerField(default=0)
    # What is left to do after the answer: each flag is cleared by the step that did it.
    seats_held = models.BooleanField(default=False)
    seats_confirmed = models.BooleanField(default=False)
    seats_released = models.BooleanField(default=False)
    notified = models.BooleanField(default=False)
    booking_recorded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "updated_at"])]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    @property
    def charge_idempotency_key(self) -> str:
        """Derived from the order, so every attempt to charge it, ever, uses the same key."""
        return f"order-{self.id}-charge"

    @property
    def settled(self) -> bool:
        """Nothing left to do for this order."""
        if self.status == self.Status.CONFIRMED:
            return self.seats_confirmed and self.notified and self.booking_recorded
        if self.status == self.Status.FAILED:
            return not self.seats_held or self.seats_released
        return False
