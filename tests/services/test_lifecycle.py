"""The order's lifecycle under the interleavings that once lost money or seats.

Each test forces its interleaving with the real functions: a hook runs one driver's real step
in the middle of another's (wrapping the real function, never replacing it), and real
services answer over HTTP (tests/services/conftest.py). Docstrings say what the code did
before.
"""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.management import CommandError
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

    def make(seats_total: int, someone_else_takes_the_seats: bool, key: str = "pp") -> Order:
        show = make_show(seats_total=seats_total)
        order = pending_payment(client, show, settings, key=key)
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


# -- issue 14: after the charge, inventory decides; nothing retries forever; fencing -----------


def test_a_refund_never_races_the_seat_sale_inventory_decides(
    charged_while_pending, make_show, monkeypatch
):
    """Defect 1. Pass D1 found the hold released and could not hold it again (sold out); the
    seats freed up; pass D2 held them again and confirmed at inventory; D1 then took
    paid -> refunding and refunded. The order ended failed and refunded with its seats sold,
    its final release got 409 hold_confirmed, read as "try later", for ever."""
    order = charged_while_pending(seats_total=2, someone_else_takes_the_seats=False)
    order_id = str(order.id)
    show_id = SeatHold.objects.get(order_id=order_id).show_id
    inventory.hold_create(order_id="someone-else", show_id=show_id, quantity=2)  # the last seats
    real_hold = clients.inventory_hold

    def hold(**kwargs):
        try:
            return real_hold(**kwargs)
        except clients.SeatsUnavailable:
            if Order.objects.get(pk=order_id).status == "paid":
                # D1 was told "sold out". Now the seats free up, and D2 takes them and sells
                # them to the order at inventory, before either pass moves the order.
                inventory.hold_release(order_id="someone-else", final=True)
                real_hold(**kwargs)
                clients.inventory_confirm(order_id=order_id)
            raise

    monkeypatch.setattr(clients, "inventory_hold", hold)
    for _ in range(3):
        if settle(order.id) == "settled":
            break
    order.refresh_from_db()
    assert (order.status, order.refunded, order.settled) == ("confirmed", False, True)
    assert SeatHold.objects.get(order_id=order_id).status == "confirmed"
    assert not Refund.objects.filter(charge__order_id=order_id).exists()
    assert [n.kind for n in Notification.objects.filter(order_id=order_id)] == ["order_confirmed"]


def test_a_paid_order_whose_seats_are_gone_is_refunded_only_after_inventory_closed_the_hold(
    charged_while_pending,
):
    order = charged_while_pending(seats_total=2, someone_else_takes_the_seats=True)
    for _ in range(3):
        if settle(order.id) == "settled":
            break
    order.refresh_from_db()
    hold = SeatHold.objects.get(order_id=str(order.id))
    assert (order.status, order.refunded, hold.status, hold.closed) == (
        "failed",
        True,
        "released",
        True,
    )
    history = [(e.from_status, e.to_status) for e in order.events.filter(kind="transition")]
    assert history[-2:] == [("paid", "refunding"), ("refunding", "failed")]
    assert "final release: already_released" in order.events.get(to_status="refunding").detail


def test_an_answer_that_will_not_change_parks_the_order_instead_of_retrying_for_ever(
    client, stack, make_show, upstream, settings
):
    """Any 4xx from another service was "try later": the worker retried every pass, for ever,
    with no alert. Now a final answer parks the order, with its reason, for staff."""
    show = make_show(seats_total=4)
    order_id = place(client, show, key="tickets").json()["id"]
    Order.objects.filter(pk=order_id).update(notified=False)
    # notifications now answers every request with a 422, which will never change
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "notifications": f"{upstream.url}/status/422",
    }
    assert settle(order_id).startswith("parked: FinalAnswer")
    order = Order.objects.get(pk=order_id)
    assert order.parked and "422" in order.parked_reason and order.status == "confirmed"
    assert settle(order_id).startswith("parked")  # nothing drives it any more
    assert order_id not in reconciler.orders_without_a_live_task()  # staff own it


def test_too_many_passes_park_the_order(client, stack, settings, make_show):
    show = make_show(seats_total=4)
    order = pending_payment(client, show, settings)
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "payments": "http://127.0.0.1:9",
    }
    settings.ORDERS_SETTLE_MAX_PASSES = 3
    answers = [settle_order.call(str(order.id), attempt) for attempt in range(3)]
    assert answers[0].startswith("payment_pending: next pass")
    assert answers[2].startswith("parked: not settled after 3 passes; last: NotNow: payments")
    order.refresh_from_db()
    assert order.parked and order.events.filter(kind="parked").count() == 1


@pytest.mark.django_db
def test_a_pass_fenced_off_by_a_newer_one_cannot_move_the_order():
    """A worker paused past its lease wakes up after its order was handed to another pass:
    its writes are refused, whatever state it read."""
    order = Order.objects.create(
        idempotency_key="k", show_id=1, quantity=1, email="a@b.c", status="payment_pending"
    )
    paused = Order.objects.get(pk=order.pk)
    lifecycle.claim(paused)
    newer = Order.objects.get(pk=order.pk)
    lifecycle.claim(newer)  # the reconciler handed the order to a new pass
    with pytest.raises(lifecycle.Superseded):
        lifecycle.transition(paused, "failed", by=lifecycle.Driver.WORKER)
    with pytest.raises(lifecycle.Superseded):
        lifecycle.park(paused, "too late")
    assert Order.objects.get(pk=order.pk).status == "payment_pending"
    assert lifecycle.transition(newer, "paid", by=lifecycle.Driver.WORKER, charge_id=1)


@pytest.mark.django_db
def test_two_passes_claiming_at_once_never_hold_the_same_token():
    """Pass B claims between pass A's write of its token and A's read of it (Django's own
    execute_wrapper runs B's claim right after A's UPDATE): A must hold the older token and be
    fenced off, not read B's and believe it owns the order."""
    from django.db import connection

    order = Order.objects.create(
        idempotency_key="k", show_id=1, quantity=1, email="a@b.c", status="payment_pending"
    )
    a, b = Order.objects.get(pk=order.pk), Order.objects.get(pk=order.pk)
    interleaved, b_claimed = [], []

    def b_claims_right_after_as_update(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and "fence" in sql and not interleaved:
            interleaved.append("B")  # B's own UPDATE comes through here too
            b_claimed.append(lifecycle.claim(b))
        return result

    with connection.execute_wrapper(b_claims_right_after_as_update):
        token_a = lifecycle.claim(a)
    assert b_claimed == [token_a + 1]
    assert lifecycle.transition(b, "paid", by=lifecycle.Driver.WORKER, charge_id=1)
    with pytest.raises(lifecycle.Superseded):
        lifecycle.transition(a, "failed", by=lifecycle.Driver.WORKER)


@pytest.mark.django_db
def test_a_reaped_task_stays_failed_when_its_paused_worker_wakes_up_and_finishes_it():
    """django-tasks-db's set_successful overwrote the reaper's FAILED with SUCCESSFUL."""
    from orders.management.commands.orders_worker import FencedWorker

    result = settle_order.enqueue("00000000-0000-0000-0000-000000000000", 0)
    row = DBTaskResult.objects.get(pk=result.id)
    worker = FencedWorker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=1,
        worker_id="host:1:paused",
        excluded_queue_names=[],
    )
    row.claim(worker.worker_id)

    real_call = type(settle_order).call

    def call_after_being_reaped(self, *args, **kwargs):
        # paused past its lease: the reaper marks the task failed meanwhile
        WorkerHeartbeat.objects.create(worker_id=worker.worker_id, host="host", pid=1)
        WorkerHeartbeat.objects.filter(pk=worker.worker_id).update(
            beat_at=timezone.now() - timedelta(minutes=5)
        )
        assert reconciler.reap() == 1
        return real_call(self, *args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(type(settle_order), "call", call_after_being_reaped):
        worker.run_task(row)
    row.refresh_from_db()
    assert row.status == TaskResultStatus.FAILED
    assert row.exception_class_path == "orders.reconciler.WorkerDied"


def _parked_metric(client) -> dict[str, float]:
    text = client.get("/metrics").content.decode()
    return {
        line.split('status="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("orders_parked{")
    }


def test_a_parked_order_is_counted_and_staff_settle_it_with_the_operator_command(
    client, stack, make_show, upstream, settings
):
    """Parked, counted by orders_parked (OrdersNeedAttention's series), listed, inspected, and
    retried by staff once the cause is fixed: settled, and counted no more."""
    from django.core.management import call_command

    show = make_show(seats_total=4)
    order_id = place(client, show, key="tickets").json()["id"]
    Order.objects.filter(pk=order_id).update(notified=False)
    live = settings.RESILIENCE_SERVICES["notifications"]
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "notifications": f"{upstream.url}/status/422",
    }
    assert _parked_metric(client)["confirmed"] == 0
    assert settle(order_id).startswith("parked")
    assert _parked_metric(client)["confirmed"] == 1
    assert client.get(f"/orders/api/orders/{order_id}/").json()["needs_attention"] is True
    assert order_id in call_command("orders", "parked")
    seen = json.loads(call_command("orders", "inspect", order_id))
    assert [e["kind"] for e in seen["history"]][-1] == "parked"
    assert seen["inventory"]["status"] == "confirmed" and len(seen["payments"]["charges"]) == 1

    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "notifications": live}
    said = call_command("orders", "retry", order_id)
    assert said.endswith("Now confirmed (settled).")
    assert _parked_metric(client)["confirmed"] == 0
    with pytest.raises(CommandError, match="settled"):
        call_command("orders", "retry", order_id)


@pytest.fixture
def parked_paid(charged_while_pending):
    """A paid order, parked: its charge landed, its hold released by expiry."""

    def make(**kwargs) -> Order:
        order = charged_while_pending(**kwargs)
        [charge] = succeeded(order.id)
        Order.objects.filter(pk=order.pk).update(status="paid", charge_id=charge.pk)
        order.refresh_from_db()
        assert lifecycle.park(order, "test: paid, parked")
        return order

    return make


def test_staff_cannot_refund_an_order_whose_seats_are_sold_and_confirm_it_instead(parked_paid):
    from django.core.management import call_command

    order = parked_paid(seats_total=2, someone_else_takes_the_seats=False)
    inventory.hold_create(order_id=str(order.id), show_id=order.show_id, quantity=2, rehold=True)
    inventory.hold_confirm(order_id=str(order.id))  # sold to it, the order never heard
    with pytest.raises(CommandError, match="seats are sold: confirm it instead"):
        call_command("orders", "refund", str(order.id))
    assert not Refund.objects.exists()
    assert call_command("orders", "confirm", str(order.id)).endswith("Now confirmed (settled).")


def test_staff_cannot_confirm_an_order_without_seats_and_refund_it_instead(parked_paid):
    from django.core.management import call_command

    order = parked_paid(seats_total=2, someone_else_takes_the_seats=True)
    with pytest.raises(CommandError, match="no seats for it"):
        call_command("orders", "confirm", str(order.id))
    said = call_command("orders", "refund", str(order.id))
    assert said.endswith("Now failed (settled)."), said
    order.refresh_from_db()
    assert (order.refunded, order.failure_code) == (True, "refunded_by_staff")
    hold = SeatHold.objects.get(order_id=str(order.id))
    assert (hold.status, hold.closed) == ("released", True)
    with pytest.raises(CommandError, match="only a paid or refunding order"):
        call_command("orders", "confirm", str(order.id))


def test_a_refunding_order_whose_seats_were_sold_is_parked_and_staff_confirm_it(parked_paid):
    """Left by an older version: refunding (decided before inventory decided) while inventory
    sold it the seats. The worker parks it rather than refund sold seats; staff confirm it
    (payments never refunded it); an order payments did refund cannot be confirmed."""
    from django.core.management import call_command

    order = parked_paid(seats_total=4, someone_else_takes_the_seats=False)
    inventory.hold_create(order_id=str(order.id), show_id=order.show_id, quantity=2, rehold=True)
    inventory.hold_confirm(order_id=str(order.id))
    Order.objects.filter(pk=order.pk).update(
        status="refunding", seats_released=False, parked_reason="", parked_at=None
    )
    assert settle(order.id).startswith("parked: NeedsAttention: refunding, but inventory")
    said = call_command("orders", "retry", str(order.id))
    assert "parked again: NeedsAttention" in said, said
    assert call_command("orders", "confirm", str(order.id)).endswith("Now confirmed (settled).")
    order.refresh_from_db()
    assert (order.refunded, order.notified, order.seats_released) == (False, True, False)
    assert not Refund.objects.exists()

    refunded = parked_paid(seats_total=4, someone_else_takes_the_seats=False, key="another")
    clients.payments_refund(
        idempotency_key=refunded.refund_idempotency_key,
        charge_id=refunded.charge_id,
        reason="seats_unavailable",
    )  # the refund landed, its answer was lost
    Order.objects.filter(pk=refunded.pk).update(status="refunding")
    refunded.refresh_from_db()
    with pytest.raises(CommandError, match="payments refunded it"):
        call_command("orders", "confirm", str(refunded.id))
    assert Order.objects.get(pk=refunded.pk).status == "refunding"
