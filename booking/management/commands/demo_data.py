"""Load the demo data that this service owns, whichever service it is."""

from django.apps import apps
from django.core.management import call_command
from django.core.management.base import BaseCommand

# app -> its loader; run once per service, with that service's settings.
LOADERS = {"inventory": "demo_shows", "recommendations": "demo_cobookings"}


class Command(BaseCommand):
    help = "Load this service's demo data (shows, co-booking counts); idempotent."

    def handle(self, *args, **options):
        ran = False
        for app, loader in LOADERS.items():
            if apps.is_installed(app):
                call_command(loader, stdout=self.stdout)
                ran = True
        if not ran:
            self.stdout.write("this service owns no demo data")
