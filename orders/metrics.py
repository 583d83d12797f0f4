"""Orders' own series on its ``/metrics``: the orders parked for staff, read at scrape time."""

import logging

from prometheus_client.core import GaugeMetricFamily

from resilience.metrics import register_collector

logger = logging.getLogger(__name__)

PARKED_HELP = (
    "Orders the worker stopped driving (an answer that will not change, or too many passes), "
    "by the status they stopped in: staff settle them with manage.py orders"
)


class ParkedOrders:
    """``orders_parked{status}``: one query per scrape (the index on status serves it)."""

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("orders_parked", PARKED_HELP, labels=["status"])

    def describe(self):
        yield self._family()

    def collect(self):
        from django.db import DatabaseError
        from django.db.models import Count

        from orders.models import PARKED, Order

        family = self._family()
        try:
            counts = dict(
                Order.objects.filter(PARKED)
                .values_list("status")
                .annotate(n=Count("pk"))
                .order_by()
            )
        except DatabaseError:  # no series this scrape, rather than a scrape that fails
            logger.warning("orders_parked: the database did not answer", exc_info=True)
            return
        for status in Order.Status.values:  # every status, 0 included: no gap in a panel
            family.add_metric([status], counts.get(status, 0))
        yield family


def register() -> None:
    register_collector(ParkedOrders())
