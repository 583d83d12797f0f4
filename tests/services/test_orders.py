"""The booking flow across real services over HTTP: nothing lost, nothing charged twice."""

import pytest

from inventory.models import SeatHold
from notifications.models import Notification
from orders.models import Order
from orders.tasks import settle_order
from payments.models import Charge
from recommendations.models import Booking
from tests.ports import closed_port_url

ORDER = {"show_id": None, "quantity": 2, "email": "fan@example.com", "card_token": "tok_visa"}


def place(client, show, key="key-1", **overrides):
    body = {**ORDER, "show_id": show.pk, **overrides}
    return client.post(
        "/orders/api/orders/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )


def settle(order_id):
    """Run the worker's task for one order, as db_worker would."""
    return settle_order.call(str(order_id), 0)


def test_a_booking_is_confirmed_charged_once_and_sells_its_seats(client, stack, make_show):
    show = make_show(seats_total=10, price="45.00")
    response = place(client, show)
    assert response.status_code == 201, response.content
    order = response.json()
    assert (order["status"], order["amount"], order["show_title"]) == (
        "confirmed",
        "90.00",
        show.title,
    )
    assert Charge.objects.filter(order_id=order["id"], status="succeeded").count() == 1
    show.refresh_from_db()
    assert (show.seats_sold, show.seats_held) == (2, 0)
    assert Notification.objects.filter(order_id=order["id"]).count() == 1
    assert settle(order["id"]) == "settled"  # the worker records the booking for recommendations
    assert Booking.objects.filter(order_id=order["id"]).count() == 1


def test_the_same_idempotency_key_gives_one_order_and_one_charge(client, stack, make_show):
    show = make_show()
    first = place(client, show, key="same")
    again = place(client, show, key="same")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
    assert Charge.objects.count() == 1


def test_the_same_key_for_a_different_order_is_refused(client, stack, make_show):
    show = make_show()
    place(client, show, key="same")
    response = place(client, show, key="same", quantity=3)
    assert (response.status_code, response.json()["code"]) == (422, "idempotency_key_reused")


def test_a_declined_card_fails_the_order_and_releases_its_seats(client, stack, make_show):
    show = make_show(seats_total=10)
    response = place(client, show, card_token="tok_decline")
    order = response.json()
    assert (response.status_code, order["status"], order["failure_code"]) == (
        201,
        "failed",
        "card_declined",
    )
    assert not Charge.objects.filter(order_id=order["id"], status="succeeded").exists()
    show.refresh_from_db()
    assert (show.seats_held, show.seats_sold) == (0, 0)
    assert SeatHold.objects.get(order_id=order["id"]).status == "released"


def test_sold_out_fails_the_order_without_a_charge(client, stack, make_show):
    show = make_show(seats_total=1)
    response = place(client, show, quantity=2)
    assert (response.status_code, response.json()["failure_code"]) == (201, "seats_unavailable")
    assert Charge.objects.count() == 0


def test_an_answer_from_inventory_that_no_replay_changes_fails_the_order_at_once(
    client, stack, settings, make_show, upstream
):
    """A 400 from inventory to the hold (a request that breaks its contract) will be the same
    answer to every replay: the order fails now, nothing charged, instead of a 503 that asks
    the customer to try again; and the worker settles it once inventory answers again."""
    show = make_show(seats_total=10)
    live = settings.RESILIENCE_SERVICES["inventory"]
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "inventory": f"{upstream.url}/status/400",
    }
    response = place(client, show)
    order = response.json()
    assert (response.status_code, order["status"], order["failure_code"]) == (
        201,
        "failed",
        "inventory_refused",
    )
    assert Charge.objects.count() == 0
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "inventory": live}
    assert settle_order.call(order["id"], 0) == "settled"
    assert SeatHold.objects.get(order_id=order["id"]).status == "released"  # its tombstone


def test_an_unknown_show_is_a_404(client, stack):
    response = client.post(
        "/orders/api/orders/",
        {**ORDER, "show_id": 424242},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert (response.status_code, response.json()["code"]) == (404, "show_not_found")


def test_payments_unavailable_leaves_the_order_pending_until_the_worker_charges_it(
    client, stack, settings, make_show
):
    show = make_show(seats_total=10)
    live_payments = settings.RESILIENCE_SERVICES["payments"]
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "payments": closed_port_url()}
    response = place(client, show)
    order = response.json()
    assert (response.status_code, order["status"]) == (201, "payment_pending")
    show.refresh_from_db()
    assert (show.seats_held, show.seats_sold) == (2, 0)  # seats stay held, nothing is faked
    assert "next pass" in settle(order["id"])  # payments still down: the task reschedules
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "payments": live_payments}
    assert settle(order["id"]) == "settled"
    assert Order.objects.get(pk=order["id"]).status == "confirmed"
    assert Charge.objects.filter(order_id=order["id"]).count() == 1
    assert Charge.objects.get(order_id=order["id"]).idempotency_key == f"order-{order['id']}-charge"
    show.refresh_from_db()
    assert (show.seats_held, show.seats_sold) == (0, 2)
    assert Notification.objects.filter(order_id=order["id"]).count() == 1


def test_notifications_down_still_confirms_and_the_worker_delivers_later(
    client, stack, settings, make_show
):
    show = make_show()
    live = settings.RESILIENCE_SERVICES["notifications"]
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "notifications": closed_port_url(),
    }
    order = place(client, show).json()
    assert order["status"] == "confirmed"
    assert Notification.objects.count() == 0
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "notifications": live}
    assert settle(order["id"]) == "settled"
    assert Notification.objects.filter(order_id=order["id"]).count() == 1
    assert settle(order["id"]) == "settled"
    assert Notification.objects.filter(order_id=order["id"]).count() == 1


def test_inventory_unavailable_is_a_clear_503_and_the_same_key_places_the_order_again(
    client, stack, settings, make_show
):
    """The 503 told clients to retry with the same key, and the replay answered 503 forever."""
    show = make_show()
    live = settings.RESILIENCE_SERVICES["inventory"]
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "inventory": closed_port_url()}
    response = place(client, show)
    body = response.json()
    assert (response.status_code, body["code"]) == (503, "inventory_unavailable")
    assert "Nothing was charged" in body["message"] and response["Retry-After"] == "2"
    assert response["X-Dependency-Unavailable"] == "inventory"
    assert Order.objects.get(pk=body["order_id"]).status == "pending"
    assert Charge.objects.count() == 0
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "inventory": live}
    again = place(client, show)
    assert (again.status_code, again.json()["status"]) == (200, "confirmed")
    assert again.json()["id"] == body["order_id"]
    assert Charge.objects.filter(order_id=body["order_id"]).count() == 1


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        ({**ORDER, "show_id": 1}, {}, "idempotency_key_missing"),
        ({**ORDER, "show_id": 1, "quantity": -1}, {"HTTP_IDEMPOTENCY_KEY": "k"}, "invalid"),
        ({**ORDER, "show_id": 1, "quantity": 10**9}, {"HTTP_IDEMPOTENCY_KEY": "k"}, "invalid"),
        (
            {**ORDER, "show_id": 1, "email": "not-an-email"},
            {"HTTP_IDEMPOTENCY_KEY": "k"},
            "invalid",
        ),
        ([ORDER], {"HTTP_IDEMPOTENCY_KEY": "k"}, "invalid"),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_a_4xx_with_a_code(client, body, headers, code):
    response = client.post("/orders/api/orders/", body, content_type="application/json", **headers)
    assert response.status_code == 400
    assert response.json()["code"] == code


@pytest.mark.django_db
def test_malformed_json_is_a_400(client):
    response = client.post(
        "/orders/api/orders/",
        "{not json",
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert (response.status_code, response.json()["code"]) == (400, "parse_error")
