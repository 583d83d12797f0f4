from django.core.management.base import BaseCommand, CommandError

from booking.budgets import SERVICES, Graph


class Command(BaseCommand):
    help = (
        "Check timeout budgets and retry amplification along every call path between the services."
    )

    def handle(self, *args, **options):
        graph = Graph.from_settings_modules()
        self.stdout.write(
            "Calls between services (caller -> callee: attempt timeout / deadline x attempts, callee worst case)"
        )
        for caller in SERVICES:
            for callee in sorted({c for calls in graph.paths(caller).values() for c in calls}):
                edge = graph.edge(caller, callee)
                self.stdout.write(
                    f"  {caller:>8} -> {callee:<16} {edge.attempt:>5.1f} s / {edge.deadline:>5.1f} s x {edge.attempts}"
                    f"   {callee} worst case {graph.worst_case(callee):.1f} s"
                )
        self.stdout.write(
            "\nRetry amplification (attempts the last service can receive for one call at the entry)"
        )
        for path, attempts in graph.amplification():
            self.stdout.write(f"  {' -> '.join(path):<45} x{attempts}")
        orders = graph.settings["orders"]
        self.stdout.write(
            f"\nOrders: a request placing an order may work {graph.worst_case('orders'):.1f} s; "
            f"replays and the worker take over after ORDERS_SAFETY_NET_DELAY = "
            f"{getattr(orders, 'ORDERS_SAFETY_NET_DELAY', '?')} s"
        )
        problems = graph.problems()
        if problems:
            raise CommandError("\n".join(p.message for p in problems))
        self.stdout.write(
            self.style.SUCCESS("\nEvery caller waits at least as long as its callee may work.")
        )
