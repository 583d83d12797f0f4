import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Order(models.Model):
    """An order and where it is in its life; ``orders.lifecycle`` says how it may move."""

    class Status(models.TextChoices):
        PENDING = "pending"  # being placed: nothing charged, nothing intended yet
        PAYMENT_PENDING = "payment_pending"  # seats held, the charge intended (maybe made)
        PAID = "paid"  # charged; its seats are being sold to it
        CONFIRMED = "confirmed"  # charged and its seats sold
        REFUNDING = "refunding"  # charged, but its seats could not be had: being refunded
        FAILED = "failed"  # nothing charged, or the charge refunded

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
    # Every time here is the database's clock (``Now()``), never a process's: leases and ages
    # are compared by processes on several hosts.
    status_changed_at = models.DateTimeField(db_default=Now())
    # A pending order is being placed by one request until then; a replay after it (or after
    # the request gave up on inventory and cleared it) places it again.
    placing_until = models.DateTimeField(null=True)
    failure_code = models.CharField(max_length=64, blank=True)
    charge_id = models.PositiveBigIntegerField(null=True)
    refund_id = models.PositiveBigIntegerField(null=True)
    payment_attempts = models.PositiveIntegerField(default=0)
    # Parked: the worker stopped (an answer that will not change, or too many passes) and
    # staff decide (``manage.py orders``). The status says where it stopped; nothing drives it.
    parked_reason = models.CharField(max_length=500, blank=True)
    parked_at = models.DateTimeField(null=True)
    # A fencing token: each pass of the worker takes the next one, and its writes hold only
    # while it is still the newest. A worker that was paused past its lease (its task reaped
    # and handed to another) wakes up fenced off.
    fence = models.PositiveBigIntegerField(default=0)
    # What is left to do in a final state: each flag is set by the step that did it.
    seats_released = models.BooleanField(default=False)  # failed: its hold released for good
    notified = models.BooleanField(default=False)  # confirmed: tickets e-mailed; refunded: told
    booking_recorded = models.BooleanField(default=False)  # confirmed: told recommendations
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

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
    def refund_idempotency_key(self) -> str:
        return f"order-{self.id}-refund"

    @property
    def refunded(self) -> bool:
        return self.refund_id is not None

    @property
    def parked(self) -> bool:
        return bool(self.parked_reason)

    @property
    def settled(self) -> bool:
        """Nothing left to do for this order (``SETTLED`` below, in Python)."""
        if self.status == Order.Status.CONFIRMED:
            return self.notified and self.booking_recorded
        if self.status == Order.Status.FAILED:
            return self.seats_released and (self.refund_id is None or self.notified)
        return False


Status = Order.Status

# Orders with nothing left to do, as a query: the reconciler drives every order outside it.
SETTLED = Q(status=Status.CONFIRMED, notified=True, booking_recorded=True) | Q(
    Q(refund_id__isnull=True) | Q(notified=True), status=Status.FAILED, seats_released=True
)


PARKED = ~Q(parked_reason="")


class OrderEvent(models.Model):
    """The order's history: each transition, park and operator action, in the order it won."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(db_default=Now())
    kind = models.CharField(max_length=16)  # transition, parked, unparked, operator
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    by = models.CharField(max_length=16)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.kind} {self.from_status}->{self.to_status} ({self.by})"


class WorkerHeartbeat(models.Model):
    """A task worker that is alive: it writes ``beat_at`` every few seconds. A RUNNING task
    whose worker stopped beating was left by a dead worker (django-tasks-db issue #5)."""

    worker_id = models.CharField(max_length=64, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_default=Now())
    beat_at = models.DateTimeField(db_default=Now())  # the database's clock

    def __str__(self) -> str:
        return f"worker {self.worker_id} (last beat {self.beat_at:%H:%M:%S})"
