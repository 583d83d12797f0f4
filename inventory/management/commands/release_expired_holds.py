import time

from django.core.management.base import BaseCommand

from inventory.services import holds_release_expired


class Command(BaseCommand):
    help = "Release seat holds past their expiry; with --every, keep doing it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--every", type=float, default=None, help="seconds between sweeps; run forever"
        )

    def handle(self, *args, every=None, **options):
        while True:
            released = holds_release_expired()
            if every is None:
                self.stdout.write(f"released {released} expired holds")
                return
            time.sleep(every)
