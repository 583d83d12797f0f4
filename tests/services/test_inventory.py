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
    assert services.hold_release(order_id="never-held") == (None, "absent")


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


# -- the defects of issue 14: each test failed on the code before it ----------------------------


def _lock_waiters() -> int:
    """How many sessions of the test database wait on a lock (PostgreSQL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        # Inside a transaction, pg_stat_activity is a snapshot taken at its first read.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def _until_someone_waits_on_a_lock(timeout: float = 5.0) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _lock_waiters():
            return
        time.sleep(0.02)
    raise AssertionError("nobody waited on a lock: the interleaving was not forced")


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_concurrent_repeat_for_the_order_holding_the_last_seats_gets_its_hold(
    make_show, monkeypatch
):
    """Defect 2: the repeat missed the first request's uncommitted hold, found the last seats
    taken (by that very hold) and answered 409 seats_unavailable; orders failed the order."""
    show = make_show(seats_total=2)
    first_took_seats, release_first = threading.Event(), threading.Event()
    real_take = services._take_seats

    def take(show_id, quantity):
        taken = real_take(show_id, quantity)
        if threading.current_thread().name == "first":
            first_took_seats.set()
            release_first.wait(10)  # its transaction stays open: the repeat comes now
        return taken

    monkeypatch.setattr(services, "_take_seats", take)
    outcomes = {}

    def hold(name):
        try:
            outcomes[name] = services.hold_create(order_id="same", show_id=show.pk, quantity=2)
        except Exception as exc:
            outcomes[name] = exc
        finally:
            close_db_connections()

    first = threading.Thread(target=hold, args=("first",), name="first")
    first.start()
    assert first_took_seats.wait(10)
    repeat = threading.Thread(target=hold, args=("repeat",), name="repeat")
    repeat.start()
    _until_someone_waits_on_a_lock()  # the repeat waits on the first's transaction
    release_first.set()
    first.join(10)
    repeat.join(10)
    assert not isinstance(outcomes["repeat"], Exception), outcomes["repeat"]
    (hold_, created), (again, created_again) = outcomes["first"], outcomes["repeat"]
    assert (created, created_again, again.pk, again.status) == (True, False, hold_.pk, "held")
    assert counts(show) == (2, 0)


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_rehold_between_the_statements_of_a_final_release_cannot_leave_the_hold_held(
    make_show,
):
    """Defect 3: the final release was two statements (release, then close if released). A
    rehold between them left the hold held and not closed, the API answered 200, and its
    seats stayed held until the TTL."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    show = make_show(seats_total=4)
    services.hold_create(order_id="late", show_id=show.pk, quantity=2)
    SeatHold.objects.filter(order_id="late").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.holds_release_expired() == 1  # released, not closed: may be held again
    locked, outcome = threading.Event(), {}

    def rehold():
        """The order's worker holds it again, inside a transaction that first locks the row."""
        try:
            with transaction.atomic():
                SeatHold.objects.select_for_update().get(order_id="late")
                locked.set()
                _until_someone_waits_on_a_lock()  # the final release waits on this row
                services.hold_create(order_id="late", show_id=show.pk, quantity=2, rehold=True)
        finally:
            close_db_connections()

    def final_release():
        try:
            outcome["release"] = services.hold_release(order_id="late", final=True)
        except Exception as exc:
            outcome["release"] = exc
        finally:
            close_db_connections()

    worker = threading.Thread(target=rehold)
    worker.start()
    assert locked.wait(10)
    releaser = threading.Thread(target=final_release)
    releaser.start()
    worker.join(15)
    releaser.join(15)
    hold = SeatHold.objects.get(order_id="late")
    assert (hold.status, hold.closed) == ("released", True), outcome
    assert counts(show) == (0, 0)
    assert outcome["release"][1] == services.Release.RELEASED  # it says what it did


@pytest.mark.django_db
def test_a_final_release_that_comes_before_its_hold_leaves_a_tombstone(make_show):
    """Defect 4: releasing an order that held nothing recorded nothing, so a replayed hold
    that landed later held seats for a failed order."""
    from inventory.exceptions import HoldClosed

    show = make_show(seats_total=4)
    hold, outcome = services.hold_release(order_id="ghost", final=True)
    assert (outcome, hold.status, hold.closed, hold.show_id) == (
        "tombstone",
        "released",
        True,
        None,
    )
    with pytest.raises(HoldClosed):
        services.hold_create(order_id="ghost", show_id=show.pk, quantity=2, rehold=True)
    with pytest.raises(HoldClosed):
        services.hold_create(order_id="ghost", show_id=show.pk, quantity=2)
    assert counts(show) == (0, 0)
    assert services.hold_release(order_id="ghost", final=True)[1] == "already_released"


@pytest.mark.django_db
def test_the_release_api_says_what_it_did(client, make_show):
    show = make_show(seats_total=4)
    services.hold_create(order_id="a", show_id=show.pk, quantity=1)

    def release(order_id, final=True):
        return client.post(
            f"/inventory/api/holds/{order_id}/release/",
            {"final": final},
            content_type="application/json",
        )

    first, again, ghost = release("a"), release("a"), release("never", final=False)
    assert (first.status_code, first.json()["outcome"], first.json()["closed"]) == (
        200,
        "released",
        True,
    )
    assert again.json()["outcome"] == "already_released"
    assert ghost.json() == {"order_id": "never", "status": "absent", "outcome": "absent"}
    tomb = release("tomb")
    assert (tomb.json()["outcome"], tomb.json()["unit_price"], tomb.json()["show_title"]) == (
        "tombstone",
        None,
        None,
    )
    services.hold_create(order_id="sold", show_id=show.pk, quantity=1)
    services.hold_confirm(order_id="sold")
    sold = release("sold")
    assert (sold.status_code, sold.json()["code"]) == (409, "hold_confirmed")
