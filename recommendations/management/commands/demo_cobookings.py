"""Load recommendations' demo history: how many customers booked both shows of a pair."""

from django.core.management.base import BaseCommand
from django.db import transaction

from recommendations.models import CoBooking
from recommendations.services import cobooking_add

# (show id, other show id, customers); the ids are inventory's demo shows.
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
    help = "Load the demo co-booking counts; does nothing if there are some."

    @transaction.atomic
    def handle(self, *args, **options):
        if CoBooking.objects.exists():
            self.stdout.write("recommendations: co-bookings already loaded")
            return
        for show_id, other, count in COBOOKINGS:
            cobooking_add(show_id=show_id, other_show_id=other, count=count)
        self.stdout.write(f"recommendations: {len(COBOOKINGS)} co-booked pairs")
