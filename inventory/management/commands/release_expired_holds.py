import logging
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inventory.services import holds_release_expired

logger = logging.getLogger("inventory.sweeper")


class Command(BaseCommand):
    help = "Release seat holds past their expiry; with --every, keep doing it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--every", type=float, default=None, help="seconds between sweeps; run forever"
        )

    def handle(self, *args, every=None, **options):
        while True:
            try:
                released = holds_release_expired()
            except Exception:  # the database away, say: the sweeper itself must not die
                if every is None:
                    raise
                logger.exception("sweep failed; trying again in %s s", every)
                close_old_connections()
            else:
                if every is None:
                    self.stdout.write(f"released {released} expired holds")
                    return
            time.sleep(every)
