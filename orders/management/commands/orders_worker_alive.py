import argparse

from django.core.management.base import BaseCommand

from orders import worker_health


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return seconds


class Command(BaseCommand):
    help = (
        "The task worker's liveness probe, without the database: exit 0 if its heartbeat thread "
        "touched ORDERS_WORKER_ALIVE_FILE within --max-age seconds, else 1."
    )
    # A probe runs every few seconds beside the worker: no system checks, no database.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-age",
            type=_seconds,
            default=60.0,
            help="Seconds since the last beat after which the worker is dead (default 60: "
            "well above a beat that waits out the database pool's timeout).",
        )

    def handle(self, *args, max_age: float, **options):
        path = worker_health.alive_file()
        seconds = worker_health.age(path)
        if seconds is not None and seconds <= max_age:
            self.stdout.write(f"alive: {path} touched {seconds:.1f} s ago")
            return
        said = "never touched" if seconds is None else f"touched {seconds:.1f} s ago"
        self.stderr.write(f"dead: {path} {said} (max age {max_age:g} s)")
        raise SystemExit(1)
