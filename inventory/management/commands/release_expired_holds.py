import logging
import signal
import threading

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
        # SIGTERM (supervisor stopping it) ends the loop after the sweep under way, if any:
        # a sweep is one transaction, so stopping inside one would lose nothing either.
        stopping = threading.Event()
        if every is not None:
            signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
        while not stopping.is_set():
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
            stopping.wait(every)
