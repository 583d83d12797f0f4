"""Seat holds: idempotent per order, and never an oversold show, under concurrency."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from inventory import services
from inventory.exceptions import (
    HoldConfirmed,
    HoldMismatch,
    HoldReleased,
    SeatsUnavailable,
    ShowNotFound,
)
from inventory.models import SeatHold, Show
from tests.services.conftest import close_db_connections


def counts(show):
    show.refresh_from_db()
    return show.seats_held, show.seats_sold


@pytest.mark.django_db
def test_hold_confirm_release_move_the_counts(make_show):
    show = make_show(seats_total=10)
    services.hold_create(order_id="a", show_id=show.pk, quantity=3)
    services.hold_create(order_id="b", show_id=show.pk, quantity=2)
    assert counts(show) == (5, 0)
    services.hold_confirm(order_id="a")
    assert counts(show) == (2, 3)
    services.hold_release(order_id="b")
    assert counts(show) == (0, 3)


@pytest.mark.django_db
def test_every_write_is_idempotent_per_order(make_show):
    show = make_show(seats_total=10)
    first, created = services.hold_create(order_id="a", show_id=show.pk, quantity=3)
    again, created_again = services.hold_create(order_id="a", show_id=show.pk, quantity=3)
    assert (created, created_again, first.pk) == (True, False, again.pk)
    services.hold_confirm(order_id="a")
    services.hold_confirm(order_id="a")
    assert counts(show) == (0, 3)
    assert services.hold_release(order_id="never-held") is None


@pytest.mark.django_db
def test_conflicting_requests_are_refused(make_show):
    show = make_show(seats_total=3)
    services.hold_create(order_id="a", show_id=show.pk, quantity=2)
    with pytest.raises(HoldMismatch):
        services.hold_create(order_id="a", show_id=show.pk, quantity=1)
    with pytest.raises(SeatsUnavailable):
        services.hold_create(order_id="b", show_id=show.pk, quantity=2)
    with pytest.raises(ShowNotFound):
        services.hold_create(order_id="c", show_id=999999, quantity=1)
    services.hold_confirm(order_id="a")
    with pytest.raises(HoldConfirmed):
        services.hold_release(order_id="a")
    services.hold_create(order_id="d", show_id=show.pk, quantity=1)
    services.hold_release(order_id="d")
    with pytest.raises(HoldReleased):
        services.hold_confirm(order_id="d")


@pytest.mark.django_db
def test_expired_holds_are_released(make_show):
    from datetime import timedelta

    from django.utils import timezone

    show = make_show(seats_total=5)
    services.hold_create(order_id="old", show_id=show.pk, quantity=2)
    services.hold_create(order_id="new", show_id=show.pk, quantity=1)
    SeatHold.objects.filter(order_id="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.holds_release_expired() == 1
    assert counts(show) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_holds_never_oversell(make_show):
    """30 threads race for 10 seats, one each: exactly 10 get one."""
    show = make_show(seats_total=10)
    start = threading.Barrier(30)

    def hold(i):
        start.wait()
        try:
            services.hold_create(order_id=f"order-{i}", show_id=show.pk, quantity=1)
            return "held"
        except SeatsUnavailable:
            return "sold out"
        finally:
            close_db_connections()

    with ThreadPoolExecutor(max_workers=30) as pool:
        outcomes = list(pool.map(hold, range(30)))
    assert outcomes.count("held") == 10
    assert counts(show) == (10, 0)
    assert SeatHold.objects.filter(show=show).count() == 10


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_order_hold_once(make_show):
    show = make_show(seats_total=10)
    start = threading.Barrier(10)

    def hold(_):
        start.wait()
        try:
            return services.hold_create(order_id="same", show_id=show.pk, quantity=2)[1]
        finally:
            close_db_connections()

    with ThreadPoolExecutor(max_workers=10) as pool:
        created = list(pool.map(hold, range(10)))
    assert created.count(True) == 1
    assert counts(show) == (2, 0)


def test_the_database_refuses_an_oversold_show(make_show):
    from django.db import IntegrityError, transaction

    show = make_show(seats_total=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Show.objects.filter(pk=show.pk).update(seats_sold=3)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["", "confirm/", "release/"])
def test_an_order_id_with_a_nul_in_the_path_is_not_found(client, action):
    """A 500 on PostgreSQL, which cannot take a NUL in a query (the run on PostgreSQL shows it)."""
    path = f"/inventory/api/holds/a%00b/{action}"
    answer = client.post(path) if action else client.get(path)
    assert answer.status_code == 404
