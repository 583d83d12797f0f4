from django.db import models


class Booking(models.Model):
    """A confirmed booking, as far as co-booking counts need it."""

    order_id = models.CharField(max_length=64, unique=True)
    customer = models.CharField(max_length=64, db_index=True)  # a hash of the email, not the email
    show_id = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"booking {self.order_id} of show {self.show_id}"


class CoBooking(models.Model):
    """How many customers booked both ``show_id`` and ``other_show_id``."""

    show_id = models.PositiveIntegerField()
    other_show_id = models.PositiveIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["show_id", "other_show_id"], name="one_count_per_pair"),
        ]
        indexes = [models.Index(fields=["show_id", "-count"])]

    def __str__(self) -> str:
        return f"{self.show_id} & {self.other_show_id}: {self.count}"
