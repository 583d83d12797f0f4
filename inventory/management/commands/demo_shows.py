"""Load inventory's demo venues and shows (fixed ids, so recommendations' demo data agrees)."""

import datetime
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from inventory.models import Show, Venue

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


class Command(BaseCommand):
    help = "Load the demo venues and shows; does nothing if shows exist."

    @transaction.atomic
    def handle(self, *args, **options):
        if Show.objects.exists():
            self.stdout.write("inventory: shows already loaded")
            return
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
        self.stdout.write(f"inventory: {len(SHOWS)} shows")
