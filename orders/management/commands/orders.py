import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from orders import lifecycle, operator, settling
from orders.models import PARKED, Order


class Command(BaseCommand):
    help = (
        "Staff's commands for orders: list the parked ones, inspect one (its history and each "
        "service's view), retry, refund or confirm a parked one. Each is validated by the "
        "lifecycle and refuses what would break an invariant (docs/architecture.md)."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("parked", help="the parked orders, with their reasons")
        actions.add_parser("lifecycle", help="the states and transitions, with their drivers")
        settle = actions.add_parser(
            "settle",
            help="reset orders' breakers shared in Redis, then wait until no order is left to "
            "settle but parked ones (what it found, as JSON)",
        )
        settle.add_argument(
            "--wait", type=float, default=90.0, help="seconds to wait at most (default 90)"
        )
        settle.add_argument(
            "--no-wait",
            dest="wait_for_orders",
            action="store_false",
            help="only count what is left (a fault still set would keep orders unsettled)",
        )
        for name, what in (
            ("inspect", "the order, its history, and what each service knows of it (JSON)"),
            ("retry", "give a parked order back to the worker (after its cause was fixed)"),
            ("refund", "refund a paid order: its seats are released for good first"),
            ("confirm", "confirm a paid order: its seats are sold to it first"),
        ):
            actions.add_parser(name, help=what).add_argument("order", help="the order's id")

    def handle(self, *args, action, **options):
        if action == "lifecycle":
            return lifecycle.describe()
        if action == "settle":
            if options["wait"] < 0:
                raise CommandError(f"--wait must be 0 or more seconds, not {options['wait']:g}")
            return settling.settle(options["wait"], wait_for_orders=options["wait_for_orders"])
        if action == "parked":
            parked = Order.objects.filter(PARKED).order_by("parked_at")
            return (
                "\n".join(
                    f"{o.pk}  {o.status:<16} since {o.parked_at:%Y-%m-%d %H:%M:%S}  {o.parked_reason}"
                    for o in parked
                )
                or "no parked order"
            )
        order = self._order(options["order"])
        if action == "inspect":
            return json.dumps(operator.inspect(order), indent=2, default=str)
        try:
            done = getattr(operator, action)(order)
        except operator.Refused as exc:
            raise CommandError(f"{action} refused: {exc}") from None
        except lifecycle.IllegalTransition as exc:
            raise CommandError(f"{action} refused by the lifecycle: {exc}") from None
        state = done.order.status + (" (settled)" if done.order.settled else "")
        return f"order {done.order.pk}: {done.said}. Now {state}."

    def _order(self, value: str) -> Order:
        try:
            return Order.objects.get(pk=uuid.UUID(value))
        except (ValueError, Order.DoesNotExist):
            raise CommandError(f"no order {value!r}") from None
