"""Admission control: requests the service cannot serve in time are refused at once, browsing
first, and health, metrics and chaos never; behind real gunicorn, queue time is what it sees."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.core import checks
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from resilience import admission, policies, testing
from resilience import gunicorn as resilience_gunicorn
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
ON = {
    "ENABLED": True,
    "RULES": [["POST", "/api/orders/", "critical"], ["GET", "/api/shows/", "sheddable"]],
}


def middleware(view=None, **settings):
    with override_settings(RESILIENCE_ADMISSION={**ON, **settings}):
        return admission.AdmissionMiddleware(view or (lambda request: HttpResponse("served")))


def queued(seconds: float, path="/api/shows/", method="get", **extra):
    """A request that waited ``seconds`` in gunicorn's queue for a thread."""
    request = getattr(RequestFactory(), method)(path, **extra)
    request.META[admission.QUEUE_WAIT] = seconds
    return request


def test_a_request_that_waited_past_its_class_bound_is_refused_at_once():
    gate = middleware()
    refused = gate(queued(0.3))  # browsing: 0.25 s
    assert refused.status_code == 503
    assert refused["Retry-After"] == "1"
    body = json.loads(refused.content)
    assert body["code"] == "overloaded"
    assert "sheddable" in body["message"]
    assert gate(queued(0.3, "/api/orders/", "post")).content == b"served"  # critical: 2 s
    assert gate(queued(0.3, "/elsewhere/")).content == b"served"  # default: 0.5 s
    assert gate(queued(0.6, "/elsewhere/")).status_code == 503
    assert gate(queued(0.01)).content == b"served"
    outcomes = {
        (criticality, outcome): testing.metric(
            "resilience_admission_requests_total", criticality=criticality, outcome=outcome
        )
        for criticality in admission.CRITICALITIES
        for outcome in ("admitted", "shed_queue_time")
    }
    assert outcomes == {
        ("critical", "admitted"): 1,
        ("critical", "shed_queue_time"): 0,
        ("default", "admitted"): 1,
        ("default", "shed_queue_time"): 1,
        ("sheddable", "admitted"): 1,
        ("sheddable", "shed_queue_time"): 1,
    }


@pytest.mark.parametrize("path", ["/health/", "/metrics", "/chaos/"])
def test_health_metrics_and_chaos_are_never_shed(path):
    assert middleware()(queued(60, path)).content == b"served"


def test_disabled_it_admits_everything():
    assert middleware(ENABLED=False)(queued(60)).content == b"served"


def test_inside_the_stack_the_callers_criticality_is_taken_at_the_edge_it_is_not(settings):
    request = queued(0.3, **{admission.META_KEY: "critical"})
    settings.RESILIENCE_TRUST_DEADLINE_HEADER = True
    assert middleware()(request).content == b"served"
    settings.RESILIENCE_TRUST_DEADLINE_HEADER = False  # an outside client cannot jump the queue
    assert middleware()(queued(0.3, **{admission.META_KEY: "critical"})).status_code == 503


def test_in_flight_over_the_limit_is_refused_and_the_reserve_is_kept_for_critical_requests():
    release = threading.Event()
    inside = []

    def view(request):
        inside.append(request.path)
        release.wait(5)
        return HttpResponse("served")

    gate = middleware(view, MAX_IN_FLIGHT=4, CRITICAL_RESERVE=0.25)
    assert gate.room == {"critical": 4, "default": 3, "sheddable": 2}
    deadline = time.monotonic() + 5

    def until_inside(n):
        while len(inside) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=6) as pool:
        admitted = [pool.submit(gate, queued(0, "/api/shows/")) for _ in range(2)]
        until_inside(2)
        assert gate(queued(0, "/api/shows/")).status_code == 503  # browsing: 2 of 4
        admitted.append(pool.submit(gate, queued(0, "/elsewhere/")))
        until_inside(3)
        assert gate(queued(0, "/elsewhere/")).status_code == 503  # default: 3 of 4
        admitted.append(pool.submit(gate, queued(0, "/api/orders/", "post")))
        until_inside(4)
        assert gate(queued(0, "/api/orders/", "post")).status_code == 503  # critical: 4 of 4
        release.set()
        assert [f.result().status_code for f in admitted] == [200] * 4
    assert admission.counts.in_flight == 0
    assert gate(queued(0, "/api/shows/")).content == b"served"


def test_the_checks_name_a_wrong_key_or_value(settings):
    settings.RESILIENCE_ADMISSION = {"ENABLE": True, "RULES": [["GET", "/", "urgent"]]}
    messages = [m.msg for m in checks.run_checks(tags=["resilience"]) if m.id == "resilience.E009"]
    assert len(messages) == 2
    assert "'ENABLED'" in messages[0]
    assert "RULES" in messages[1]


def test_the_worker_and_the_middleware_agree_on_the_environ_key():
    assert resilience_gunicorn.QUEUE_WAIT == admission.QUEUE_WAIT


# -- behind real gunicorn --------------------------------------------------------------------


def serve(worker_class: str, admission_state: str):
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            worker_class,
            "--workers",
            "1",
            "--threads",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "tests.resilience.admission_app.wsgi:application",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "ADMISSION": admission_state,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.resilience.admission_app.settings",
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/health/", timeout=1)
            return process, url
        except requests.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError("gunicorn did not start") from None
            time.sleep(0.1)


def burst(url: str, n: int = 40) -> list[tuple[int, float]]:
    """``n`` browsing requests at once at a server of 2 threads x 100 ms: (status, seconds)."""

    def one(_):
        began = time.monotonic()
        status = requests.get(url + "/work", timeout=10).status_code
        return status, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("admission_state", ["on", "off"])
def test_behind_gunicorn_a_burst_past_capacity_is_shed_by_queue_time(admission_state):
    """40 requests at once at 20 a second of capacity: with admission on, those that waited
    more than 0.25 s for a thread are refused, and the ones served were served in time; off,
    every request waits its turn, the last ones about 2 s."""
    process, url = serve("resilience.gunicorn.ThreadWorker", admission_state)
    try:
        requests.get(url + "/work", timeout=5)  # warm: the first request loads Django's views
        answers = burst(url)
        health = requests.get(url + "/health/", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    served = [took for status, took in answers if status == 200]
    refused = [took for status, took in answers if status == 503]
    assert len(served) + len(refused) == 40
    assert health.status_code == 200
    if admission_state == "off":
        assert refused == []
        assert max(served) > 1.5  # the queue: 40 x 100 ms over 2 threads
    else:
        assert len(refused) >= 20
        assert 4 <= len(served) <= 20
        assert max(served) < 1.0  # at most 0.25 s queued, plus its 0.1 s of work, plus slack


def test_behind_plain_gthread_nothing_is_stamped_so_queue_time_sheds_nothing():
    process, url = serve("gthread", "on")
    try:
        requests.get(url + "/work", timeout=5)
        answers = burst(url, 20)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert [status for status, _ in answers] == [200] * 20


# -- the caller's side: overload refusals and adaptive throttling -------------------------------


def test_an_overload_refusal_is_not_retried_nor_counted_by_the_breaker(make_policy, settings):
    """Behind real gunicorn with admission on: the refusals reach the caller as OverloadedError
    at once, its breaker stays closed, and nothing is retried."""
    from resilience.exceptions import OverloadedError
    from resilience.http import ServiceClient

    process, url = serve("resilience.gunicorn.ThreadWorker", "on")
    try:
        make_policy(
            "shedding",
            RETRY={"MAX_ATTEMPTS": 3},
            CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5},
            BULKHEAD={"MAX_CONCURRENT_CALLS": 50},
            THROTTLE={"K": None},  # every call reaches the server here
        )
        settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "shedding": url}
        policy = policies["shedding"]
        client = ServiceClient("shedding")
        client.get("/work")

        def one(_):
            try:
                return client.get("/work").status_code
            except OverloadedError as exc:
                assert exc.response.headers["X-Overloaded"] == "sheddable"
                return "overloaded"

        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(one, range(30)))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert answers.count("overloaded") >= 10
    assert policy.breaker.current_state == "closed"
    assert testing.metric("resilience_retry_attempts_total", name="shedding") == 0
    assert testing.metric(
        "resilience_overload_refusals_total", name="shedding", by="dependency"
    ) == answers.count("overloaded")
    assert testing.metric(
        "resilience_circuitbreaker_calls_total", name="shedding", kind="ignored"
    ) == answers.count("overloaded")


def refusing(calls: list, accept_every: int = 0):
    """A dependency that refuses every call for overload (or accepts every n-th)."""
    from resilience.exceptions import OverloadedError

    def call():
        calls.append(1)
        if accept_every and len(calls) % accept_every == 0:
            return "ok"
        raise OverloadedError("over capacity")

    return call


def test_adaptive_throttling_holds_calls_back_while_the_dependency_refuses(
    make_policy, resilience_test_mode
):
    from resilience.exceptions import OverloadedError

    policy = make_policy(RETRY={"MAX_ATTEMPTS": 3, "BUDGET_WINDOW": 10.0})
    reached = []
    for _ in range(100):
        with pytest.raises(OverloadedError):
            policy.call(refusing(reached), idempotent=True)
    # requests - 2 x accepts over requests + 1: about 1 - 1/n once nothing is accepted, so
    # about ln(100) ~ 5 of the 100 calls reach it (with every call wanted, 100).
    assert len(reached) <= 20
    held = testing.metric("resilience_overload_refusals_total", name="upstream", by="throttle")
    assert held == 100 - len(reached)
    assert policy.breaker.current_state == "closed"
    assert testing.metric("resilience_retry_attempts_total", name="upstream") == 0
    # Once the refusals leave the window, every call goes through again.
    resilience_test_mode.advance(11)
    answered = [policy.call(lambda: "ok", idempotent=True) for _ in range(20)]
    assert answered == ["ok"] * 20


def test_adaptive_throttling_holds_nothing_back_while_half_the_calls_are_accepted(make_policy):
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 1})
    reached = []
    for _ in range(100):
        policy.call(refusing(reached, accept_every=2), idempotent=True, fallback=lambda exc: None)
    assert len(reached) >= 95  # K = 2: one accept in two keeps the throttle open
    policy_off = make_policy("off", RETRY={"MAX_ATTEMPTS": 1}, THROTTLE={"K": None})
    reached_off = []
    for _ in range(50):
        policy_off.call(refusing(reached_off), idempotent=True, fallback=lambda exc: None)
    assert len(reached_off) == 50  # off: every call reaches the dependency


# -- found in review ----------------------------------------------------------------------------


def test_a_slow_client_is_not_taken_for_a_long_queue():
    """The stamp was taken at accept: the time a client took to send its request counted as
    queue time, and an idle server refused a request sent 0.4 s after connecting (and a
    critical one sent after 2.3 s)."""
    import socket

    process, url = serve("resilience.gunicorn.ThreadWorker", "on")
    try:
        port = int(url.rsplit(":", 1)[1])
        answers = []
        for delay, request in (
            (0.4, b"GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
            (0.6, b"GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                time.sleep(delay)  # connected, then slow to send: a client's time, not a queue
                sock.sendall(request)
                answers.append(sock.recv(100).split(b"\r\n")[0])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert answers == [b"HTTP/1.1 200 OK"] * 2


@pytest.mark.parametrize(
    "value, words",
    [
        ({"EXEMPT_PATHS": "/health/"}, "EXEMPT_PATHS"),
        ({"EXEMPT_PATHS": None}, "EXEMPT_PATHS"),
        ({"EXEMPT_PATHS": [1]}, "EXEMPT_PATHS"),
        ({"RULES": None}, "RULES"),
        ({"RETRY_AFTER": True}, "RETRY_AFTER"),
        ({"MAX_IN_FLIGHT": 0}, "MAX_IN_FLIGHT"),
    ],
)
def test_the_checks_refuse_what_would_break_the_middleware(value, words):
    problems = admission.validate(value)
    assert len(problems) == 1 and words in problems[0]


def test_a_request_s_calls_carry_its_criticality_to_the_next_service(make_policy, upstream):
    from resilience.http import ServiceClient

    make_policy()
    token = admission.current_criticality.set("critical")
    try:
        echoed = ServiceClient("upstream").get("/echo").json()
    finally:
        admission.current_criticality.reset(token)
    assert echoed["headers"].get(admission.HEADER) == "critical"
    assert admission.HEADER not in ServiceClient("upstream").get("/echo").json()["headers"]


def test_a_refusal_counts_in_the_second_its_call_was_counted(make_policy, resilience_test_mode):
    """A refusal that came back in the next second outlived its request in the window: one
    refusal then held back half the calls of a caller that calls once in a while."""
    from resilience.exceptions import OverloadedError

    clock = resilience_test_mode
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 1, "BUDGET_WINDOW": 10.0})
    clock.advance(1.0 - clock.now() % 1.0 - 0.001)  # a millisecond before a second's end

    def refused_in_the_next_second():
        clock.advance(0.01)
        raise OverloadedError("over capacity")

    with pytest.raises(OverloadedError):
        policy.call(refused_in_the_next_second, idempotent=True)
    clock.advance(9.5)  # the call has left the window; the refusal must have too
    with policy.stats.lock:  # the next call, counted as the policy counts it: never held back
        second = int(clock.now())
        policy.retry_budget.record_call_locked(second)
        assert policy.throttle.probability_locked(second) == 0.0
