"""Fault injection: guarded by a token, scoped by match, and released the moment it is lifted."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

TOKEN = "test-chaos-token"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chaos(settings, tmp_path):
    settings.CHAOS_ENABLED = True
    settings.CHAOS_TOKEN = TOKEN
    settings.VAR_DIR = tmp_path
    settings.SERVICE_NAME = "payments"
    return settings


def put(client, fault, **headers):
    return client.put("/chaos/", fault, content_type="application/json", **({**AUTH, **headers}))


def test_absent_unless_enabled(client, settings):
    settings.CHAOS_ENABLED = False
    response = client.get("/chaos/", **AUTH)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_no_token_is_401_and_a_wrong_one_403(client, chaos):
    assert client.put("/chaos/", {"hang": True}, content_type="application/json").status_code == 401
    wrong = put(client, {"hang": True}, HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    assert client.get("/chaos/", **AUTH).json()["fault"] == {}


def test_enabled_without_a_configured_token_refuses_everything(client, chaos):
    chaos.CHAOS_TOKEN = ""
    response = client.get("/chaos/", HTTP_AUTHORIZATION="Bearer ")
    assert (response.status_code, response.json()["code"]) == (403, "chaos_token_not_configured")


def test_a_fault_is_set_read_and_lifted(client, chaos):
    fault = {"latency_ms": 10, "match": {"path_prefix": "/payments/", "method": "POST"}}
    assert put(client, fault).json()["fault"] == {**fault, "error_status": 503}
    assert client.get("/chaos/", **AUTH).json() == {
        "service": "payments",
        "fault": {**fault, "error_status": 503},
    }
    assert client.delete("/chaos/", **AUTH).json()["fault"] == {}


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": 2},
        {"latency_ms": -1},
        {"hang": "sometimes"},
        {"bogus": 1},
        [1, 2],
        {"match": {"path_prefix": "no-slash"}},
        {"error_status": 200, "fail_next": 1},
    ],
)
def test_a_bad_fault_is_a_400(client, chaos, fault):
    response = put(client, fault)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"


@pytest.mark.django_db
def test_fail_next_fails_exactly_n_matching_requests(client, chaos):
    put(
        client,
        {"fail_next": 2, "error_status": 502, "match": {"path_prefix": "/inventory/api/shows/"}},
    )
    statuses = [client.get("/inventory/api/shows/").status_code for _ in range(4)]
    assert statuses == [502, 502, 200, 200]
    assert client.get("/health/").status_code == 200  # outside the match
    assert client.get("/chaos/", **AUTH).json()["fault"]["fail_next"] == 0


@pytest.mark.django_db
def test_error_rate_one_fails_every_request_with_the_chosen_status(client, chaos):
    put(client, {"error_rate": 1.0, "error_status": 500})
    response = client.get("/inventory/api/shows/")
    assert (response.status_code, response.json()["code"]) == (500, "chaos_injected")
    assert client.get("/metrics").status_code == 200  # observability stays up


@pytest.mark.django_db
def test_latency_delays_matching_requests(client, chaos):
    put(client, {"latency_ms": 300, "match": {"method": "GET"}})
    start = time.monotonic()
    client.get("/inventory/api/shows/")
    assert time.monotonic() - start >= 0.3


def test_lifting_a_hang_releases_held_requests_at_once(live_server, chaos, transactional_db):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    requests.put(f"{live_server.url}/chaos/", json={"hang": True}, headers=headers, timeout=5)
    threading.Timer(
        0.5, lambda: requests.delete(f"{live_server.url}/chaos/", headers=headers, timeout=5)
    ).start()
    start = time.monotonic()
    response = requests.get(f"{live_server.url}/inventory/api/shows/", timeout=10)
    assert response.status_code == 200
    assert 0.45 <= time.monotonic() - start < 1.5


def test_clearing_on_the_machine_releases_a_service_too_busy_for_its_api(
    live_server, chaos, transactional_db
):
    """``manage.py chaos clear``: the way out when a hang holds every thread of the service."""
    from django.core.management import call_command

    headers = {"Authorization": f"Bearer {TOKEN}"}
    requests.put(f"{live_server.url}/chaos/", json={"hang": True}, headers=headers, timeout=5)
    threading.Timer(0.5, call_command, args=("chaos", "clear")).start()
    start = time.monotonic()
    response = requests.get(f"{live_server.url}/inventory/api/shows/", timeout=10)
    assert response.status_code == 200
    assert 0.45 <= time.monotonic() - start < 1.5
    assert (
        requests.get(f"{live_server.url}/chaos/", headers=headers, timeout=5).json()["fault"] == {}
    )


def test_delay_response_does_the_work_then_answers_late(live_server, chaos, transactional_db):
    from payments.models import Charge

    headers = {"Authorization": f"Bearer {TOKEN}"}
    requests.put(
        f"{live_server.url}/chaos/",
        json={"delay_response_ms": 1500, "match": {"path_prefix": "/payments/api/charges/"}},
        headers=headers,
        timeout=5,
    )
    body = {"order_id": "late-1", "amount": "10.00", "card_token": "tok_visa"}
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{live_server.url}/payments/api/charges/",
            json=body,
            timeout=0.5,
            headers={"Idempotency-Key": "late-1"},
        )
    assert (
        Charge.objects.filter(order_id="late-1").count() == 1
    )  # charged, though the caller gave up
    requests.delete(f"{live_server.url}/chaos/", headers=headers, timeout=5)


def test_production_cannot_enable_chaos():
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DJANGO_SETTINGS_MODULE": "booking.settings.payments",
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": "s" * 25 + "0123456789abcdefghijklmnopqrstuvwxyz",
        "CHAOS_ENABLED": "1",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CHAOS_ENABLED cannot be set" in done.stderr
