"""Load the demo data that this service owns: shows for inventory, co-bookings for recommendations.

Run once per service with its own settings; the show ids are fixed so that the two services,
each with its own database, agree on them. Loading twice changes nothing.
"""

import datetime
from decimal import Decimal

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

VENUES = [("Olympic Hall", "Seoul"), ("Blue Square", "Seoul"), ("Bexco Auditorium", "Busan")]
# id, title, artist, venue index, month, day, price, seats
SHOWS = [
    (1, "Valentine's Night", "The Resilients", 0, 2, 14, "120.00", 40),
    (2, "Circuit Breakers Live", "Half-Open", 1, 3, 2, "85.00", 30),
    (3, "Retry Storm", "Exponential Backoff", 2, 3, 9, "70.00", 25),
    (4, "Bulkhead Sessions", "The Partitions", 0, 3, 21, "95.00", 30),
    (5, "Timeouts in Tokyo", "Deadline", 1, 4, 4, "60.00", 20),
    (6, "Fallback Acoustic", "Cached Answers", 2, 4, 18, "55.00", 20),
    (7, "Graceful Degradation", "Popular Choice", 0, 5, 1, "110.00", 35),
    (8, "Idempotent Hearts", "Exactly Once", 1, 5, 16, "80.00", 25),
]
# Customers who booked both shows, as the demo's history.
COBOOKINGS = [
    (1, 4, 12),
    (1, 7, 9),
    (1, 8, 7),
    (2, 3, 10),
    (2, 5, 6),
    (3, 6, 8),
    (4, 7, 5),
    (5, 8, 4),
    (6, 2, 3),
]


class Command(BaseCommand):
    help = "Load this service's demo data (shows, co-booking counts); idempotent."

    def handle(self, *args, **options):
        loaded = []
        if apps.is_installed("inventory"):
            loaded.append(self._inventory())
        if apps.is_installed("recommendations"):
            loaded.append(self._recommendations())
        self.stdout.write("; ".join(loaded) or "this service owns no demo data")

    @transaction.atomic
    def _inventory(self) -> str:
        from inventory.models import Show, Venue

        if Show.objects.exists():
            return "inventory: shows already loaded"
        venues = [Venue.objects.create(name=name, city=city) for name, city in VENUES]
        for show_id, title, artist, venue, month, day, price, seats in SHOWS:
            Show.objects.create(
                id=show_id,
                title=title,
                artist=artist,
                venue=venues[venue],
                price=Decimal(price),
                starts_at=datetime.datetime(2027, month, day, 19, 30, tzinfo=datetime.UTC),
                seats_total=seats,
            )
        return f"inventory: {len(SHOWS)} shows"

    @transaction.atomic
    def _recommendations(self) -> str:
        from recommendations.models import CoBooking
        from recommendations.services import cobooking_add

        if CoBooking.objects.exists():
            return "recommendations: co-bookings already loaded"
        for show_id, other, count in COBOOKINGS:
            cobooking_add(show_id=show_id, other_show_id=other, count=count)
        return f"recommendations: {len(COBOOKINGS)} co-booked pairs"
