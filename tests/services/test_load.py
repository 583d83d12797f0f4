"""The bounded load driver against every service's real API on one live server."""

import time

from tests.ports import closed_port_url
from tests.services.conftest import close_db_connections
from workshop.scenarios.load import NO_ANSWER, ORDER, RECOMMENDATIONS, SHOWS, Load, Profile


def test_the_load_browses_and_books_and_stops_at_its_request_cap(stack, make_show):
    shows = [make_show(seats_total=50).id for _ in range(2)]
    profile = Profile(browsers=2, buyers=3, orders_per_buyer=2, duration=20, max_requests=24)
    began = time.monotonic()
    samples = Load(f"{stack.url}/gateway", profile, shows).run()
    close_db_connections()
    assert len(samples) == 24  # the cap, not the 20 s
    assert time.monotonic() - began < 15
    orders = [s for s in samples if s.endpoint == ORDER]
    assert orders and all(s.outcome == "ok" and s.detail == "confirmed" for s in orders)
    assert all(s.order_id for s in orders)
    assert {s.endpoint for s in samples} >= {SHOWS, ORDER}
    recommendations = [s for s in samples if s.endpoint == RECOMMENDATIONS]
    assert all(s.detail.startswith("source=") for s in recommendations)


def test_the_load_stops_at_its_duration_and_counts_no_answer():
    profile = Profile(browsers=2, buyers=1, orders_per_buyer=1000, duration=1.0, buyer_think=0.05)
    began = time.monotonic()
    samples = Load(closed_port_url(), profile, [1]).run()  # refused: no answer
    assert time.monotonic() - began < 5
    assert samples and all(s.outcome == NO_ANSWER and s.status is None for s in samples)
    assert max(s.at for s in samples) < 1.0
