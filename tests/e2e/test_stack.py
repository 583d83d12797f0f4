"""End to end: the real stack of gunicorn processes, driven over HTTP as a user would."""

import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from workshop.scenarios.stack import ROOT, SERVICES

pytestmark = pytest.mark.e2e


def book(stack, *, show_id, quantity=2, card_token="tok_visa", key=None, email="fan@example.com"):
    return requests.post(
        stack.url("gateway", "/api/orders/"),
        json={"show_id": show_id, "quantity": quantity, "email": email, "card_token": card_token},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
        timeout=30,
    )


def show(stack, show_id):
    return requests.get(stack.url("inventory", f"/api/shows/{show_id}/"), timeout=5).json()


def charges(stack, order_id):
    return requests.get(
        stack.url("payments", "/api/charges/"), params={"order_id": order_id}, timeout=5
    ).json()


def test_every_service_answers_health_and_metrics(stack):
    for service in SERVICES:
        health = requests.get(stack.url(service, "/health/"), timeout=5)
        assert health.status_code == 200, service
        assert health.json()["service"] == service
        metrics = requests.get(stack.url(service, "/metrics"), timeout=5)
        assert metrics.status_code == 200
        assert metrics.headers["Content-Type"].startswith("text/plain")
    orders_metrics = requests.get(stack.url("orders", "/metrics"), timeout=5).text
    assert (
        'resilience_bulkhead_max_allowed_concurrent_calls{name="notifications"}' in orders_metrics
    )


def test_the_demo_shows_are_served_by_the_gateway(stack):
    shows = requests.get(stack.url("gateway", "/api/shows/"), timeout=5).json()
    assert len(shows) == 8
    assert shows[0]["title"] == "Valentine's Night"
    page = requests.get(stack.url("gateway", "/shows/1/"), timeout=5)
    assert page.status_code == 200 and "Book now" in page.text


def test_a_booking_of_two_seats_is_confirmed_charged_once_and_sold(stack):
    before = show(stack, 2)["seats_sold"]
    response = book(stack, show_id=2, quantity=2)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "confirmed"
    assert [c["status"] for c in charges(stack, order["id"])] == ["succeeded"]
    assert show(stack, 2)["seats_sold"] == before + 2
    notified = stack.wait_for(
        lambda: requests.get(
            stack.url("notifications", "/api/notifications/"),
            params={"order_id": order["id"]},
            timeout=5,
        ).json()
    )
    assert len(notified) == 1


def test_the_same_idempotency_key_twice_is_one_order_and_one_charge(stack):
    key = uuid.uuid4().hex
    first, again = book(stack, show_id=3, key=key), book(stack, show_id=3, key=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(charges(stack, first.json()["id"])) == 1


def test_a_declined_card_fails_with_no_charge_and_no_seat_kept(stack):
    before = show(stack, 4)
    response = book(stack, show_id=4, card_token="tok_decline")
    order = response.json()
    assert (order["status"], order["failure_code"]) == ("failed", "card_declined")
    assert [c["status"] for c in charges(stack, order["id"])] == ["declined"]
    after = show(stack, 4)
    assert (after["seats_held"], after["seats_sold"]) == (
        before["seats_held"],
        before["seats_sold"],
    )


def test_concurrent_orders_for_the_last_seats_never_oversell(stack):
    """16 buyers ask for 2 seats each, at once, for a show with fewer seats than that left."""
    before = show(stack, 5)
    buyers = 16
    assert before["seats_available"] < 2 * buyers
    start = threading.Barrier(buyers)

    def buy(_):
        start.wait()
        return book(stack, show_id=5, quantity=2)

    with ThreadPoolExecutor(max_workers=buyers) as pool:
        responses = list(pool.map(buy, range(buyers)))
    assert all(r.status_code < 500 for r in responses), [r.status_code for r in responses]
    orders = [r.json() for r in responses]
    confirmed = [o for o in orders if o["status"] == "confirmed"]
    final = show(stack, 5)
    assert final["seats_sold"] + final["seats_held"] <= final["seats_total"]
    assert final["seats_sold"] - before["seats_sold"] == sum(o["quantity"] for o in confirmed)
    assert len(confirmed) == before["seats_available"] // 2
    for order in confirmed:
        assert [c["status"] for c in charges(stack, order["id"])] == ["succeeded"]
    assert {o["failure_code"] for o in orders if o["status"] == "failed"} == {"seats_unavailable"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ("{not json", {"Idempotency-Key": "x"}, 400, "parse_error"),
        (
            {"show_id": 1, "quantity": -1, "email": "a@b.co", "card_token": "tok_visa"},
            {"Idempotency-Key": "x"},
            400,
            "invalid",
        ),
        (
            {"show_id": 1, "quantity": 10**12, "email": "a@b.co", "card_token": "tok_visa"},
            {"Idempotency-Key": "x"},
            400,
            "invalid",
        ),
        (
            {"show_id": 999999, "quantity": 1, "email": "a@b.co", "card_token": "tok_visa"},
            {"Idempotency-Key": uuid.uuid4().hex},
            404,
            "show_not_found",
        ),
        (
            {"show_id": 1, "quantity": 1, "email": "nope", "card_token": "tok_visa"},
            {"Idempotency-Key": "x"},
            400,
            "invalid",
        ),
        ([{"show_id": 1}], {"Idempotency-Key": "x"}, 400, "invalid"),
        (
            {"show_id": 1, "quantity": 1, "email": "a@b.co", "card_token": "tok_visa"},
            {},
            400,
            "idempotency_key_missing",
        ),
    ],
)
def test_bad_input_is_a_4xx_json_answer(stack, body, headers, status, code):
    kwargs = (
        {"data": body, "headers": {**headers, "Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body, "headers": headers}
    )
    response = requests.post(stack.url("gateway", "/api/orders/"), timeout=10, **kwargs)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_charge_without_idempotency_key_is_a_400(stack):
    response = requests.post(
        stack.url("payments", "/api/charges/"),
        timeout=5,
        json={"order_id": "o", "amount": "1.00", "card_token": "tok_visa"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_missing")


def test_a_stopped_service_refuses_connections_and_comes_back(stack):
    assert stack.manage("stack", "stop", "recommendations").returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url("recommendations", "/health/"), timeout=2)
    answer = requests.get(stack.url("gateway", "/api/shows/6/recommendations/"), timeout=5).json()
    assert answer["source"] in ("cache", "popular")
    assert stack.manage("stack", "start", "recommendations").returncode == 0
    stack.wait_for(lambda: stack.healthy("recommendations"))


def test_the_locustfile_runs_the_booking_journey_without_failures(stack):
    """Workshops run locust against the stack: a short headless run, bounded by -t and by
    the subprocess timeout, exits 0 only when no request failed."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            "locustfile.py",
            "--host",
            stack.urls["gateway"],
            "--headless",
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--run-time",
            "6s",
            "--only-summary",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = done.stdout + done.stderr
    assert "/api/shows/{id}/recommendations/" in summary and "/api/orders/" in summary


def test_every_metric_the_dashboard_and_the_alerts_query_is_served(stack):
    """The Grafana dashboard and deploy/prometheus/alerts.yml select metrics by name: a typo or
    a renamed metric is an empty panel and an alert that never fires. Each name they use is in
    the live /metrics of some service (tests/test_alerts.py checks the same names against
    resilience/metrics.py; this checks what the running services really serve).

    Counters and histograms appear only once counted, so first: a booking (the calls,
    durations, breakers, bulkheads and settings of gateway and orders), a retry (inventory
    answers the gateway 503 once, the retry succeeds) and a fallback (recommendations answers
    503 once, the gateway answers from its fallback)."""
    import time

    from tests.test_alerts import metric_names_in_queries

    # The one name no test can make appear: a retry the retry budget refused. The budget
    # allows at least 10 retries per 10 s, and the breaker opens after 5 failed attempts,
    # long before. tests/test_alerts.py checks that resilience/metrics.py declares it.
    not_provoked = {"resilience_retry_budget_exhausted_total"}

    response = book(stack, show_id=7, quantity=1)
    assert response.status_code == 201, response.text
    try:
        stack.inject(
            "inventory",
            {"fail_next": 1, "error_status": 503, "match": {"path_prefix": "/api/shows/"}},
        )
        shown = requests.get(stack.url("gateway", "/api/shows/7/"), timeout=10)
        assert shown.status_code == 200, shown.text  # the second attempt answered
        stack.inject(
            "recommendations",
            {
                "fail_next": 1,
                "error_status": 503,
                "match": {"path_prefix": "/api/recommendations/"},
            },
        )
        answer = requests.get(stack.url("gateway", "/api/shows/7/recommendations/"), timeout=10)
        assert answer.json()["source"] in ("cache", "popular")
    finally:
        stack.lift("inventory")
        stack.lift("recommendations")

    wanted = set(metric_names_in_queries()) - not_provoked
    assert "resilience_circuitbreaker_process_state" in wanted  # the names were found at all

    def missing() -> set[str]:
        # Sample names (resilience_retry_attempts_total), not family names (..._attempts):
        # the queries select samples.
        served = {name for service in SERVICES for name, _labels, _value in stack.metrics(service)}
        return wanted - served

    # The other worker processes of a service add their counts to /metrics once a second.
    end = time.monotonic() + 15
    gone = missing()
    while gone and time.monotonic() < end:
        time.sleep(0.5)
        gone = missing()
    assert gone == set(), f"queried by the dashboard or alerts.yml, served by no service: {gone}"
