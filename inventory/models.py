from django.db import models
from django.db.models import F, Q


class Venue(models.Model):
    name = models.CharField(max_length=200)
    city = models.CharField(max_length=100)

    def __str__(self) -> str:
        return f"{self.name}, {self.city}"


class Show(models.Model):
    title = models.CharField(max_length=200)
    artist = models.CharField(max_length=200)
    venue = models.ForeignKey(Venue, on_delete=models.PROTECT, related_name="shows")
    starts_at = models.DateTimeField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    seats_total = models.PositiveIntegerField()
    seats_held = models.PositiveIntegerField(default=0)
    seats_sold = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            # The database itself refuses an oversold show, whatever the code above it does.
            models.CheckConstraint(
                condition=Q(seats_held__gte=0)
                & Q(seats_sold__gte=0)
                & Q(seats_total__gte=F("seats_held") + F("seats_sold")),
                name="show_seats_within_total",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def seats_available(self) -> int:
        return self.seats_total - self.seats_held - self.seats_sold


class SeatHold(models.Model):
    class Status(models.TextChoices):
        HELD = "held"
        CONFIRMED = "confirmed"
        RELEASED = "released"

    # One hold per order: the order's id from the orders service, never a foreign key.
    order_id = models.CharField(max_length=64, unique=True)
    # No show (and no seats) for a tombstone: a final release that came before any hold.
    show = models.ForeignKey(Show, on_delete=models.PROTECT, related_name="holds", null=True)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    # Released for good by the order's own final word (the order failed): never held again,
    # and never confirmed (a closed hold is released, and only a held one is confirmed).
    # A hold released because it expired may be held again for its order (``rehold``).
    closed = models.BooleanField(default=False)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"hold {self.order_id}: {self.quantity} x {self.show_id} ({self.status})"
