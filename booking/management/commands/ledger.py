"""Print, as JSON, the records this service owns that an audit needs, whichever service it is.

The scenario runner reads every service's ledger after a run to count what no HTTP answer
shows: double charges, orders never settled, seats sold without an order, emails sent twice.

All of a service's records are read at one moment: in one transaction, REPEATABLE READ on
PostgreSQL (one snapshot for every query; under READ COMMITTED each query would see the
commits made since the one before), and on SQLite one transaction, which sees one snapshot too.
"""

import io
import json

from django.apps import apps
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, transaction

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
        with transaction.atomic():
            if connection.vendor == "postgresql":  # its first statement: the snapshot's rules
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for app, command in LEDGERS.items():
                if apps.is_installed(app):
                    ledger[app] = json.loads(call_command(command, stdout=io.StringIO()))
        self.stdout.write(json.dumps(ledger))
