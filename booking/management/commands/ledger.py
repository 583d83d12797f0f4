"""Print, as JSON, the records this service owns that an audit needs, whichever service it is.

The scenario runner reads every service's ledger after a run to count what no HTTP answer
shows: double charges, orders never settled, seats sold without an order, emails sent twice.
"""

import io
import json

from django.apps import apps
from django.core.management import call_command
from django.core.management.base import BaseCommand

LEDGERS = {
    "orders": "orders_ledger",
    "payments": "payments_ledger",
    "inventory": "inventory_ledger",
    "notifications": "notifications_ledger",
}


class Command(BaseCommand):
    help = "Print this service's ledger (orders, charges, seats, notifications) as JSON."

    def handle(self, *args, **options):
        ledger = {}
        for app, command in LEDGERS.items():
            if apps.is_installed(app):
                ledger[app] = json.loads(call_command(command, stdout=io.StringIO()))
        self.stdout.write(json.dumps(ledger))
