"""What staff can do with an order the worker parked, each step validated by the lifecycle.

``manage.py orders inspect|retry|refund|confirm ORDER`` (``orders/management/commands/
orders.py``) calls these. None of them can break an invariant: a refund starts only after
inventory answered a final release (the seats can never be sold to the order afterwards), and
a confirmation only after inventory confirmed the hold (the seats are sold to it).
"""

from dataclasses import dataclass

from django_tasks_db.models import DBTaskResult

from booking.clients import service
from orders import clients, lifecycle
from orders.lifecycle import OPERATOR, WORKER
from orders.models import Order
from orders.services import UNAVAILABLE, drive, schedule, sell_seats_at_inventory
from resilience.exceptions import ResilienceError

Status = Order.Status


class Refused(Exception):
    """The action would break an invariant, or does not apply to the order as it is."""


@dataclass
class Outcome:
    order: Order
    said: str


def _settle_now(order: Order, said: str) -> Outcome:
    """Hand the order back to the worker: one pass now, and the next queued if needed."""
    try:
        drive(order, by=WORKER)
    except Exception as exc:  # the worker's next pass goes on from here
        said += f"; the worker goes on ({type(exc).__name__}: {exc})"
    order.refresh_from_db()
    if order.parked:
        said += f"; parked again: {order.parked_reason}"
    elif not order.settled:
        schedule(order, delay=0)
    return Outcome(order, said)


def retry(order: Order) -> Outcome:
    """Give a parked order back to the worker, as it is (after its cause was fixed)."""
    if order.settled:
        raise Refused(f"order {order.pk} is settled ({order.status}): nothing to retry")
    if not order.parked:
        raise Refused(f"order {order.pk} is not parked: the worker owns it")
    lifecycle.unpark(order, detail="retry")
    return _settle_now(order, "unparked; the worker drives it again")


def refund(order: Order) -> Outcome:
    """A paid order that staff decided gets its money back: inventory closes its hold first."""
    if order.status != Status.PAID:
        raise Refused(f"only a paid order can be refunded by hand; this one is {order.status}")
    try:
        outcome = clients.inventory_release(order_id=str(order.pk), final=True)
    except clients.HoldConfirmed:
        raise Refused("inventory says its seats are sold: confirm it instead") from None
    except (*UNAVAILABLE, clients.FinalAnswer) as exc:
        raise Refused(f"inventory did not release its seats, nothing changed: {exc}") from exc
    if not lifecycle.transition(
        order,
        Status.REFUNDING,
        by=OPERATOR,
        seats_released=True,
        failure_code="refunded_by_staff",
        detail=f"operator refund; final release: {outcome}",
    ):
        raise Refused(f"the order moved meanwhile (now {order.status}); nothing changed")
    lifecycle.unpark(order, detail="refund")
    return _settle_now(order, f"seats released for good ({outcome}); refunding")


def confirm(order: Order) -> Outcome:
    """A paid order that staff decided keeps its seats: inventory sells them first. A refunding
    one too, if payments never refunded it (inventory sold it the seats while an older version
    decided to refund it): confirmed, and its refund is never made."""
    order_id = str(order.pk)
    if order.status == Status.REFUNDING:
        if order.refund_id:
            raise Refused(f"it was refunded (refund {order.refund_id}): it cannot keep its seats")
        try:
            refunds = clients.payments_refunds(order_id=order_id)
        except (*UNAVAILABLE, clients.FinalAnswer) as exc:
            raise Refused(f"payments did not say whether it refunded it: {exc}") from exc
        if refunds:
            raise Refused(f"payments refunded it ({refunds[0]['id']}): it cannot keep its seats")
    elif order.status != Status.PAID:
        raise Refused(
            f"only a paid or refunding order can be confirmed by hand; this one is {order.status}"
        )
    try:
        sell_seats_at_inventory(order)
    except (clients.SeatsUnavailable, clients.HoldClosed, clients.HoldReleased):
        raise Refused(
            "inventory has no seats for it (its hold is closed, or sold out): refund it instead"
        ) from None
    except (*UNAVAILABLE, clients.FinalAnswer) as exc:
        raise Refused(f"inventory did not confirm its seats, nothing changed: {exc}") from exc
    if not lifecycle.transition(
        order,
        Status.CONFIRMED,
        by=OPERATOR,
        detail=f"operator confirm (was {order.status})",
        seats_released=False,
        failure_code="",
    ):
        raise Refused(f"the order moved meanwhile (now {order.status})")
    lifecycle.unpark(order, detail="confirm")
    return _settle_now(order, "seats sold to it; confirmed")


def _ask(name: str, path: str):
    try:
        response = service(name).get(path)
    except ResilienceError as exc:
        return f"unavailable: {exc}"
    try:
        return response.json() if response.status_code == 200 else f"{response.status_code}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"


def inspect(order: Order) -> dict:
    """The order, its history, and each service's view of it."""
    order_id = str(order.pk)
    fields = (
        "status", "failure_code", "parked_reason", "parked_at", "amount", "currency",
        "show_id", "quantity", "email", "charge_id", "refund_id", "payment_attempts",
        "seats_released", "notified", "booking_recorded", "fence", "created_at",
        "status_changed_at",
    )  # fmt: skip
    tasks = DBTaskResult.objects.filter(
        task_path="orders.tasks.settle_order", args_kwargs__args__0=order_id
    ).order_by("enqueued_at")
    return {
        "order": {"id": order_id, "settled": order.settled}
        | {name: getattr(order, name) for name in fields},
        "history": [
            {
                "at": event.at,
                "kind": event.kind,
                "from": event.from_status,
                "to": event.to_status,
                "by": event.by,
                "detail": event.detail,
            }
            for event in order.events.all()
        ],
        "tasks": [
            {
                "id": str(t.id),
                "status": t.status,
                "enqueued_at": t.enqueued_at,
                "return_value": t.return_value,
            }
            for t in tasks
        ],
        "inventory": _ask("inventory", f"/api/holds/{order_id}/"),
        "payments": {
            "charges": _ask("payments", f"/api/charges/?order_id={order_id}"),
            "refunds": _ask("payments", f"/api/refunds/?order_id={order_id}"),
        },
        "notifications": _ask("notifications", f"/api/notifications/?order_id={order_id}"),
    }
