import json

from django.core.management.base import BaseCommand

from chaos import store


class Command(BaseCommand):
    help = (
        "Show or clear this service's injected fault from the machine it runs on: for when the "
        "service is too busy (or hung by its own fault) to answer its chaos API."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["show", "clear"])

    def handle(self, *args, action, **options):
        if action == "clear":
            store.clear()  # every worker re-reads the file: held requests are released
            self.stdout.write("fault cleared")
        else:
            self.stdout.write(json.dumps(store.current()))
