"""The order's lifecycle under the interleavings that once lost money or seats.

Each test forces its interleaving with the real functions: a hook runs one driver's real step
in the middle of another's (wrapping the real function, never replacing it), and real
services answer over HTTP (tests/services/conftest.py). Docstrings say what the code did
before.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from inventory import services as inventory
from inventory.models import SeatHold
from notifications.management.commands.notifications_ledger import handed_to_the_mail_backend
from notifications.models import Notification
from orders import clients, lifecycle, reconciler
from orders import services as orders
from orders.models import SETTLED, Order, WorkerHeartbeat
from orders.tasks import settle_order
from payments.models import Charge, Refund
from tests.upstream import Upstream

ORDER = {"quantity": 2, "email": "fan@example.com", "card_token": "tok_visa"}


def place(client, show, key="key-1", **overrides):
    body = {**ORDER, "show_id": show.pk, **overrides}
    return client.post(
        "/orders/api/orders/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )


def settle(order_id) -> str:
    return settle_order.call(str(order_id), 0)


def expire_hold(order_id: str) -> None:
    """The hold's TTL runs out and the sweeper releases it (as it would, for real)."""
    SeatHold.objects.filter(order_id=order_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert inventory.holds_release_expired() == 1


def pending_payment(client, show, settings, key="pp") -> Order:
    """An order whose charge could not be made: payment_pending, seats held."""
    live = settings.RESILIENCE_SERVICES["payments"]
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "payments": "http://127.0.0.1:9",
    }
    order_id = place(client, show, key=key).json()["id"]
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "payments": live}
    order = Order.objects.get(pk=order_id)
    assert order.status == "payment_pending"
    return order


def succeeded(order_id) -> list[Charge]:
    return list(Charge.objects.filter(order_id=str(order_id), status="succeeded"))


# -- the state machine itself ---------------------------------------------------------------------


def test_every_transition_names_its_drivers_and_the_reconciler_takes_none():
    assert lifecycle.TRANSITIONS
    for (frm, to), (drivers, why) in lifecycle.TRANSITIONS.items():
        assert drivers and why, (frm, to)
        assert lifecycle.Driver.RECONCILER not in drivers
    assert {to for _, to in lifecycle.TRANSITIONS} | {"pending"} == set(Order.Status.values)


@pytest.mark.django_db
def test_an_illegal_transition_is_refused_before_it_touches_the_order(make_show):
    order = Order.objects.create(idempotency_key="k", show_id=1, quantity=1, email="a@b.c")
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.transition(order, "confirmed", by=lifecycle.Driver.WORKER)
    with pytest.raises(lifecycle.IllegalTransition):  # the worker never starts a charge
        lifecycle.transition(order, "payment_pending", by=lifecycle.Driver.WORKER)
    assert Order.objects.get(pk=order.pk).status == "pending"


@pytest.mark.django_db
def test_only_one_driver_wins_a_transition():
    order = Order.objects.create(
        idempotency_key="k", show_id=1, quantity=1, email="a@b.c", status="payment_pending"
    )
    stale = Order.objects.get(pk=order.pk)
    assert lifecycle.transition(order, "paid", by=lifecycle.Driver.WORKER, charge_id=7)
    assert not lifecycle.transition(stale, "failed", by=lifecycle.Driver.REQUEST)
    assert (stale.status, stale.charge_id) == ("paid", 7)  # the loser sees what the winner made


@pytest.mark.django_db
def test_settled_in_python_and_in_the_database_agree():
    import itertools

    for status, released, notified, recorded, refund in itertools.product(
        Order.Status.values, (False, True), (False, True), (False, True), (None, 5)
    ):
        order = Order.objects.create(
            idempotency_key=f"{status}{released}{notified}{recorded}{refund}",
            show_id=1,
            quantity=1,
            email="a@b.c",
            status=status,
            seats_released=released,
            notified=notified,
            booking_recorded=recorded,
            refund_id=refund,
        )
        assert order.settled == Order.objects.filter(pk=order.pk).filter(SETTLED).exists()


# -- paid without seats, never ----------------------------------------------------------------------


def test_a_pending_payment_whose_hold_expired_is_held_again_and_sold(
    client, stack, settings, make_show
):
    """The worker renewed the hold and ignored the answer; inventory answered a released hold
    with a plain 200, and the worker charged an order that had no seats."""
    show = make_show(seats_total=2)
    order = pending_payment(client, show, settings)
    expire_hold(str(order.id))
    assert settle(order.id) == "settled"
    order.refresh_from_db()
    assert order.status == "confirmed" and len(succeeded(order.id)) == 1
    assert SeatHold.objects.get(order_id=str(order.id)).status == "confirmed"
    show.refresh_from_db()
    assert (show.seats_held, show.seats_sold) == (0, 2)


def test_a_pending_payment_whose_seats_went_to_someone_else_is_never_charged(
    client, stack, settings, make_show
):
    show = make_show(seats_total=2)
    order = pending_payment(client, show, settings)
    expire_hold(str(order.id))
    assert place(client, show, key="someone-else").json()["status"] == "confirmed"
    assert settle(order.id) == "settled"
    order.refresh_from_db()
    assert (order.status, order.failure_code, order.seats_released) == (
        "failed",
        "seats_unavailable",
        True,
    )
    assert succeeded(order.id) == []
    assert (
        client.post(  # and the charge key can never charge later
            "/payments/api/charges/",
            {"order_id": str(order.id), "amount": "90.00", "card_token": "tok_visa"},
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=order.charge_idempotency_key,
        ).status_code
        == 410
    )


@pytest.fixture
def charged_while_pending(client, stack, settings, make_show):
    """payment_pending, but the charge landed at payments (the answer was lost: timed out but
    charged), and then the hold expired and was released."""

    def make(seats_total: int, someone_else_takes_the_seats: bool) -> Order:
        show = make_show(seats_total=seats_total)
        order = pending_payment(client, show, settings)
        answer = client.post(
            "/payments/api/charges/",
            {
                "order_id": str(order.id),
                "amount": "90.00",
                "currency": "EUR",
                "card_token": "tok_visa",
            },
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=order.charge_idempotency_key,
        )
        assert answer.status_code == 201
        expire_hold(str(order.id))
        if someone_else_takes_the_seats:
            assert place(client, show, key="someone-else").json()["status"] == "confirmed"
        return order

    return make


def test_a_charge_that_landed_after_the_hold_expired_gets_its_seats_held_again_and_sold(
    charged_while_pending,
):
    """finish_confirmed logged the failed seat confirmation, e-mailed "your tickets", and the
    order stayed confirmed with no seats, retried forever."""
    order = charged_while_pending(seats_total=2, someone_else_takes_the_seats=False)
    assert settle(order.id) == "settled"
    order.refresh_from_db()
    assert (order.status, order.refunded) == ("confirmed", False)
    assert SeatHold.objects.get(order_id=str(order.id)).status == "confirmed"
    assert [n.kind for n in Notification.objects.filter(order_id=str(order.id))] == [
        "order_confirmed"
    ]


def test_a_charge_that_landed_after_the_seats_went_elsewhere_is_refunded_and_the_customer_told(
    charged_while_pending,
):
    order = charged_while_pending(seats_total=2, someone_else_takes_the_seats=True)
    for _ in range(3):
        if settle(order.id) == "settled":
            break
    order.refresh_from_db()
    assert (order.status, order.failure_code, order.refunded) == (
        "failed",
        "seats_unavailable",
        True,
    )
    [charge] = succeeded(order.id)
    assert Refund.objects.get(charge=charge).amount == Decimal("90.00")
    kinds = [n.kind for n in Notification.objects.filter(order_id=str(order.id))]
    assert kinds == ["order_refunded"]
    assert [m.extra_headers["X-Booking-Kind"] for m in mail.outbox if str(order.id) in m.body] == [
        "order_refunded"
    ]


def test_a_charge_request_cannot_confirm_an_order_another_driver_failed(
    client, stack, settings, make_show, monkeypatch
):
    """charge() ignored whether its move to confirmed won: a failed order ended charged, with
    sold seats and an e-mail, while the client was told "nothing was charged"."""
    show = make_show(seats_total=4)
    order = pending_payment(client, show, settings)
    settings.ORDERS_PAYMENT_PENDING_MAX_AGE = 0
    real_charge = clients.payments_charge
    interleaved = []

    def worker_first(**kwargs):
        if not interleaved:  # the worker settles the expired payment mid-request, once
            interleaved.append(settle(order.id))
        return real_charge(**kwargs)

    monkeypatch.setattr(clients, "payments_charge", worker_first)
    orders.drive(Order.objects.get(pk=order.pk), by=lifecycle.Driver.REQUEST)  # a late replay
    assert interleaved == ["settled"]
    order.refresh_from_db()
    assert (order.status, order.failure_code) == ("failed", "payment_expired")
    assert succeeded(order.id) == []
    assert Notification.objects.filter(order_id=str(order.id)).count() == 0
    show.refresh_from_db()
    assert (show.seats_held, show.seats_sold) == (0, 0)


# -- nothing pending forever ------------------------------------------------------------------------


def test_a_payment_pending_too_long_is_settled_with_payments_never_left_pending(
    client, stack, settings, make_show
):
    show = make_show(seats_total=4)
    order = pending_payment(client, show, settings)
    settings.ORDERS_PAYMENT_PENDING_MAX_AGE = 0
    assert settle(order.id) == "settled"
    order.refresh_from_db()
    assert (order.status, order.failure_code, order.seats_released) == (
        "failed",
        "payment_expired",
        True,
    )
    show.refresh_from_db()
    assert show.seats_held == 0


def test_a_charge_refused_for_another_reason_than_a_decline_fails_the_order(
    client, stack, make_show
):
    """A 0.00 price: payments answered 400, and the order stayed payment_pending forever."""
    show = make_show(seats_total=4, price="0.00")
    response = place(client, show)
    order = response.json()
    assert (response.status_code, order["status"], order["failure_code"]) == (
        201,
        "failed",
        "payment_refused",
    )
    show.refresh_from_db()
    assert show.seats_held == 0


def test_a_pending_order_abandoned_by_its_request_is_failed_with_its_seats_back(
    client, stack, settings, make_show, monkeypatch
):
    """The request holds seats and dies before it commits the charge intent."""
    show = make_show(seats_total=4)

    def die_before_the_intent(*args, **kwargs):
        raise SystemExit("the request's process is killed here")

    monkeypatch.setattr(orders, "transition", die_before_the_intent)
    with pytest.raises(SystemExit):
        orders.order_place(idempotency_key="dies", show_id=show.pk, **ORDER)
    monkeypatch.undo()
    order = Order.objects.get(idempotency_key="dies")
    show.refresh_from_db()
    assert (order.status, show.seats_held) == ("pending", 2)
    assert "next pass" in settle(order.id)  # young: its request (or a replay) owns it
    settings.ORDERS_PENDING_MAX_AGE = 0
    assert settle(order.id) == "settled"
    order.refresh_from_db()
    assert (order.status, order.failure_code) == ("failed", "abandoned")
    show.refresh_from_db()
    assert show.seats_held == 0


def test_a_replay_after_the_first_request_died_places_the_order_instead_of_409_forever(
    client, stack, make_show
):
    show = make_show(seats_total=4)
    order = Order.objects.create(
        idempotency_key="replayed",
        request_fingerprint=orders.request_fingerprint(show_id=show.pk, **ORDER),
        show_id=show.pk,
        **ORDER,
        placing_until=timezone.now() - timedelta(seconds=1),  # its request is gone
    )
    response = place(client, show, key="replayed")
    assert (response.status_code, response.json()["status"]) == (200, "confirmed")
    assert response.json()["id"] == str(order.id)


def test_a_replay_while_the_first_request_places_the_order_is_a_409(client, stack, make_show):
    show = make_show(seats_total=4)
    Order.objects.create(
        idempotency_key="busy",
        request_fingerprint=orders.request_fingerprint(show_id=show.pk, **ORDER),
        show_id=show.pk,
        **ORDER,
        placing_until=timezone.now() + timedelta(seconds=10),
    )
    response = place(client, show, key="busy")
    assert (response.status_code, response.json()["code"]) == (409, "request_in_flight")


# -- work that survives a dead worker ---------------------------------------------------------------


def test_any_exception_in_a_pass_leads_to_another_pass(client, stack, settings, make_show):
    """Only "unavailable" was retried: anything else ended the chain silently."""
    show = make_show(seats_total=4)
    order = pending_payment(client, show, settings)
    garbage = Upstream().start()  # answers 200 with a body that is not a hold
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "inventory": garbage.url + "/echo",
    }
    try:
        before = DBTaskResult.objects.filter(status=TaskResultStatus.READY).count()
        assert "next pass" in settle(order.id)
        assert DBTaskResult.objects.filter(status=TaskResultStatus.READY).count() == before + 1
    finally:
        garbage.stop()


@pytest.mark.django_db
def test_running_tasks_of_dead_workers_are_reaped_and_their_orders_queued_again():
    """A worker killed mid-task left its row RUNNING forever (django-tasks-db issue #5), and
    nothing touched the order again."""
    orphan = Order.objects.create(
        idempotency_key="orphan", show_id=1, quantity=1, email="a@b.c", status="payment_pending"
    )
    busy = Order.objects.create(
        idempotency_key="busy", show_id=1, quantity=1, email="a@b.c", status="payment_pending"
    )
    dead = f"{reconciler.HOST[:40]}:999999999:dead"  # no such process here, no heartbeat
    alive = reconciler.new_worker_id()
    reconciler.beat(alive)
    for order, worker in ((orphan, dead), (busy, alive)):
        result = settle_order.enqueue(str(order.id), 0)
        DBTaskResult.objects.filter(pk=result.id).update(
            status=TaskResultStatus.RUNNING, worker_ids=[worker]
        )
    assert reconciler.orders_without_a_live_task() == [str(orphan.id)]
    assert reconciler.reconcile() == {"reaped": 1, "queued": 1}
    statuses = {
        r.args_kwargs["args"][0]: r.status
        for r in DBTaskResult.objects.filter(status__in=["RUNNING", "READY"])
    }
    assert statuses == {str(orphan.id): "READY", str(busy.id): "RUNNING"}
    assert DBTaskResult.objects.get(status="FAILED").exception_class_path.endswith("WorkerDied")
    assert reconciler.reconcile() == {"reaped": 0, "queued": 0}


@pytest.mark.django_db
def test_a_worker_that_stopped_beating_is_dead_even_if_its_pid_was_reused():
    worker = reconciler.new_worker_id()  # this very process: its pid exists
    reconciler.beat(worker)
    assert reconciler.dead_workers({worker}) == set()
    WorkerHeartbeat.objects.filter(pk=worker).update(beat_at=timezone.now() - timedelta(minutes=1))
    assert reconciler.dead_workers({worker}) == {worker}


@pytest.mark.django_db
def test_every_unsettled_order_without_a_task_is_queued_and_settled_ones_are_left_alone():
    lost = Order.objects.create(
        idempotency_key="lost", show_id=1, quantity=1, email="a@b.c", status="paid"
    )
    Order.objects.create(
        idempotency_key="done",
        show_id=1,
        quantity=1,
        email="a@b.c",
        status="confirmed",
        notified=True,
        booking_recorded=True,
    )
    assert reconciler.orders_without_a_live_task() == [str(lost.id)]


# -- e-mail: at least once, duplicates visible -------------------------------------------------------


@pytest.mark.django_db
def test_a_crash_after_the_mail_went_out_sends_it_again_with_the_same_message_id(
    settings, monkeypatch
):
    """notifications sent before its row committed: a crash in between sent again on retry,
    and the audit counted rows (unique per order), so the duplicate never showed."""
    from django.core.mail import EmailMessage

    from notifications import services as notifications

    real_send = EmailMessage.send

    def sent_then_killed(self, *args, **kwargs):
        real_send(self, *args, **kwargs)
        raise SystemExit("killed after the mail backend took the message")

    context = {"show_title": "Winter Lights", "quantity": 2, "amount": "90.00", "currency": "EUR"}
    monkeypatch.setattr(EmailMessage, "send", sent_then_killed)
    with pytest.raises(SystemExit):
        notifications.notification_send(
            order_id="o-1", kind="order_confirmed", email="a@b.c", context=context
        )
    monkeypatch.undo()
    assert Notification.objects.get(order_id="o-1").status == "sending"  # the intent stayed
    with pytest.raises(Exception, match="being sent"):  # within the lease: not twice at once
        notifications.notification_send(
            order_id="o-1", kind="order_confirmed", email="a@b.c", context=context
        )
    settings.NOTIFICATIONS_SEND_LEASE = 0
    notifications.notification_send(
        order_id="o-1", kind="order_confirmed", email="a@b.c", context=context
    )
    sent = handed_to_the_mail_backend()
    assert [m["order_id"] for m in sent] == ["o-1", "o-1"]
    assert {m["message_id"] for m in sent} == {"<order_confirmed.o-1@concert-booking.local>"}
    assert Notification.objects.get(order_id="o-1").status == "sent"
    notifications.notification_send(
        order_id="o-1", kind="order_confirmed", email="a@b.c", context=context
    )
    assert len(handed_to_the_mail_backend()) == 2  # sent: never again


# -- the sweeper -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sweeper_never_releases_a_hold_renewed_after_it_was_found(make_show, monkeypatch):
    """It selected the expired holds, then released each without looking at the expiry again,
    undoing a renewal that landed in between."""
    show = make_show(seats_total=4)
    inventory.hold_create(order_id="renewed", show_id=show.pk, quantity=2)
    SeatHold.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    real_expire = inventory._expire

    def renewal_lands_first(hold_id, now):
        inventory.hold_create(order_id="renewed", show_id=show.pk, quantity=2)  # the renewal
        return real_expire(hold_id, now)

    monkeypatch.setattr(inventory, "_expire", renewal_lands_first)
    assert inventory.holds_release_expired() == 0
    assert SeatHold.objects.get(order_id="renewed").status == "held"


@pytest.mark.django_db
def test_one_holds_error_does_not_stop_the_sweep(make_show, monkeypatch):
    """A hold confirmed mid-sweep raised HoldConfirmed and the sweeper process exited."""
    show = make_show(seats_total=6)
    for order_id in ("sold", "broken", "expired"):
        inventory.hold_create(order_id=order_id, show_id=show.pk, quantity=2)
    SeatHold.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    real_expire = inventory._expire
    ids = dict(SeatHold.objects.values_list("order_id", "pk"))

    def interleaved(hold_id, now):
        if hold_id == ids["sold"]:
            inventory.hold_confirm(order_id="sold")  # the order paid meanwhile
        if hold_id == ids["broken"]:
            raise RuntimeError("this one hold's row is broken")
        return real_expire(hold_id, now)

    monkeypatch.setattr(inventory, "_expire", interleaved)
    assert inventory.holds_release_expired() == 1
    assert dict(SeatHold.objects.values_list("order_id", "status")) == {
        "sold": "confirmed",
        "broken": "held",
        "expired": "released",
    }


@pytest.mark.django_db
def test_a_renewal_that_loses_the_race_with_the_sweeper_holds_again(make_show):
    """The worker renews the hold before it charges; the sweeper released it between the read
    and the renewal. The answer was 'released' (and the worker charged anyway): now it holds
    the seats again, as for a hold read released."""
    show = make_show(seats_total=4)
    inventory.hold_create(order_id="slow", show_id=show.pk, quantity=2)
    read = SeatHold.objects.get(order_id="slow")  # read held ...
    inventory.hold_release(order_id="slow")  # ... then swept, as it had expired
    hold, _ = inventory._again(read, show_id=show.pk, quantity=2, rehold=True)
    assert hold.status == "held"
    show.refresh_from_db()
    assert show.seats_held == 2


@pytest.mark.django_db
def test_a_hold_released_for_good_is_never_held_again(make_show):
    show = make_show(seats_total=4)
    inventory.hold_create(order_id="failed", show_id=show.pk, quantity=2)
    inventory.hold_release(order_id="failed", final=True)
    from inventory.exceptions import HoldClosed

    with pytest.raises(HoldClosed):
        inventory.hold_create(order_id="failed", show_id=show.pk, quantity=2, rehold=True)
    show.refresh_from_db()
    assert show.seats_held == 0
