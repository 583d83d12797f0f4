import datetime
import itertools
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connections

from inventory.models import Show, Venue

SERVICE_NAMES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
_titles = itertools.count(1)


@pytest.fixture
def make_show(db):
    def make(*, seats_total=10, price="45.00", title=None) -> Show:
        venue, _ = Venue.objects.get_or_create(name="Olympic Hall", city="Seoul")
        return Show.objects.create(
            title=title or f"Show {next(_titles)}",
            artist="The Testers",
            venue=venue,
            starts_at=datetime.datetime(2027, 2, 14, 19, 30, tzinfo=datetime.UTC),
            price=Decimal(price),
            seats_total=seats_total,
        )

    return make


@pytest.fixture
def stack(live_server, settings, transactional_db):
    """Every service's API on one live HTTP server, each under /<name>/, called through its policy."""
    settings.RESILIENCE_SERVICES = {name: f"{live_server.url}/{name}" for name in SERVICE_NAMES}
    cache.clear()
    yield live_server
    cache.clear()


def close_db_connections():
    """Threads open their own connections; close them so the test database can be flushed."""
    for conn in connections.all(initialized_only=True):
        conn.close()
