"""Faults of the resilience app's own making, each found in review and reproduced: a caller's
deadline that trips a breaker, a torn read of breaker state, an incoherent state gauge, a
bulkhead wait outside the deadline, a late answer taken as a success, a per-process floor."""

import contextlib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import RequestFactory, override_settings

from resilience import conf, testing
from resilience import deadline as deadlines
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from resilience.exceptions import CircuitOpenError, DeadlineExceededError, UpstreamStatusError
from resilience.http import ServiceClient
from resilience.middleware import DeadlineMiddleware
from tests.resilience import workers


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


# -- a caller's deadline is not the dependency's failure ------------------------------------------


def test_attempts_cut_short_by_the_callers_deadline_open_no_breaker(make_policy, upstream):
    """An outside client once sent a 1 ms deadline 48 times and opened the gateway's breakers."""
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 1}, CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5})
    client = ServiceClient("upstream")
    for budget in (0.08, 0.12) * 10:
        with deadlines.scope(budget), pytest.raises(DeadlineExceededError):
            client.get("/delay/0.3")
    assert policy.breaker.current_state == "closed"
    assert (
        testing.metric("resilience_circuitbreaker_calls_total", name="upstream", kind="failed") == 0
    )
    assert (
        testing.metric("resilience_circuitbreaker_calls_total", name="upstream", kind="ignored")
        == 20
    )
    assert client.get("/ok").status_code == 200


def test_a_slow_attempt_with_its_full_timeout_still_counts_as_a_failure(make_policy, upstream):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 1},
        TIMEOUT={"CONNECT": 0.2, "READ": 0.1},
        CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 3},
    )
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - UpstreamTimeoutError
            ServiceClient("upstream").get("/delay/0.5")
    assert policy.breaker.current_state == "open"


def test_a_trial_cut_short_by_the_callers_deadline_neither_fails_nor_passes(
    make_policy, upstream, resilience_test_mode
):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 1},
        CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5, "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 1},
    )
    client = ServiceClient("upstream")
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017
            client.get("/status/503")
    assert policy.breaker.current_state == "open"
    resilience_test_mode.advance(31)
    with deadlines.scope(0.1), pytest.raises(DeadlineExceededError):
        client.get("/delay/0.3")
    assert policy.breaker.current_state == "half-open"
    assert client.get("/ok").status_code == 200  # the permit came back: the one trial runs
    assert policy.breaker.current_state == "closed"


@pytest.mark.parametrize("value", ["1", "20", "0", "-5", "soon", "9" * 5000])
def test_the_edge_ignores_a_deadline_header_from_outside(value):
    """RESILIENCE_TRUST_DEADLINE_HEADER = False: the header never reaches a policy."""

    def view(request):
        from django.http import JsonResponse

        return JsonResponse({"remaining": deadlines.remaining()})

    request = RequestFactory().get("/", **{deadlines.META_KEY: value})
    with override_settings(RESILIENCE_TRUST_DEADLINE_HEADER=False):
        response = DeadlineMiddleware(view)(request)
    assert (response.status_code, json.loads(response.content)) == (200, {"remaining": None})


@pytest.mark.parametrize(
    ("value", "status"), [("9" * 5000, 400), ("+5", 400), ("٣٠٠", 400), ("-5", 504), ("0", 504)]
)
def test_inside_the_stack_a_bad_deadline_header_is_refused_before_any_policy(value, status):
    request = RequestFactory().get("/", **{deadlines.META_KEY: value})
    response = DeadlineMiddleware(lambda r: pytest.fail("reached the view"))(request)
    assert response.status_code == status


# -- the state a reader sees ----------------------------------------------------------------------


def test_a_reader_never_takes_a_closed_permit_in_an_open_period():
    """The state and its generation are one tuple: a reader cannot see one without the other.

    (They were two fields, the epoch written before the state: a reader between the writes
    took closed permits stamped with the open period's epoch, and its late sync left the
    process seeing "closed" while the breaker was open.) Thread switches are forced every
    microsecond so that readers land between any two bytecodes of a transition.
    """
    config = conf.build_config("torn", {"torn": {}}).circuit_breaker
    breaker = CircuitBreaker("torn", config, clock=VirtualClock())
    open_generations = set()
    permits = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            with contextlib.suppress(CircuitOpenError):
                permits.append(breaker.acquire())

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        readers = [threading.Thread(target=read) for _ in range(3)]
        for reader in readers:
            reader.start()
        for _ in range(1500):
            breaker.reset()
            for _ in range(config.minimum_number_of_calls):
                with contextlib.suppress(CircuitOpenError):
                    breaker.record(breaker.acquire(), "failure", 0.0)
            state, _, generation = breaker.state.view
            if state == "open":
                open_generations.add(generation)
        stop.set()
        for reader in readers:
            reader.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(open_generations) == 1500
    closed = [generation for kind, generation, _ in permits if kind == "closed"]
    assert closed and not set(closed) & open_generations


def test_the_state_gauge_shows_one_state_across_worker_processes(tmp_path):
    """It was merged with livemax: one worker open and another closed scraped as both at once."""
    worker = """
import sys, time
import django; django.setup()
from resilience import metrics
metrics.set_state("payments", sys.argv[1])
"""
    for state in ("open", "closed"):  # the second worker changed most recently
        workers.run_worker(tmp_path, worker, state)
    out = workers.scrape(tmp_path)
    shown = [
        line.split('state="')[1].split('"')[0]
        for line in out.splitlines()
        if line.startswith("resilience_circuitbreaker_state{") and line.endswith(" 1.0")
    ]
    assert shown == ["closed"]
    per_process = [
        line
        for line in out.splitlines()
        if line.startswith("resilience_circuitbreaker_process_state{") and line.endswith(" 1.0")
    ]
    assert len(per_process) == 2  # and each worker's own state, labelled by pid


# -- bounds --------------------------------------------------------------------------------------


def test_the_wait_for_a_bulkhead_slot_counts_inside_the_deadline(make_policy, upstream):
    """A 1 s deadline was once answered after 1.36 s: the slot wait came on top of it."""
    policy = make_policy(
        DEADLINE=1.0,
        TIMEOUT={"CONNECT": 0.1, "READ": 0.4},
        RETRY={"MAX_ATTEMPTS": 3, "BACKOFF_INITIAL": 0.01, "BACKOFF_MAX": 0.01},
        BULKHEAD={"MAX_CONCURRENT_CALLS": 1, "MAX_WAIT": 0.5},
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(policy.call, time.sleep, idempotent=True, args=(0.45,))
        wait_for(lambda: policy.bulkhead.available == 0)
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            ServiceClient("upstream").get("/delay/2")
        assert time.monotonic() - start < 1.15  # the wait, then attempts: within the deadline
        holder.result()


def test_plain_code_that_answers_after_the_deadline_is_refused(make_policy, resilience_test_mode):
    """Python cannot interrupt plain code; a 1.5 s function under a 0.5 s deadline once
    returned as a success. Its late answer is now refused, and its slowness counted."""
    policy = make_policy(
        DEADLINE=0.5,
        TIMEOUT={"CONNECT": 0.1, "READ": 0.4},
        CIRCUIT_BREAKER={"SLOW_CALL_DURATION": 1.0},
    )

    def slow():
        resilience_test_mode.advance(1.5)
        return "too late"

    with pytest.raises(DeadlineExceededError):
        policy.call(slow, idempotent=True)
    assert testing.metric("resilience_timeout_calls_total", name="upstream", kind="deadline") == 1
    assert (
        testing.metric(
            "resilience_circuitbreaker_calls_total", name="upstream", kind="slow_successful"
        )
        == 1
    )


def test_plain_code_can_name_the_exceptions_worth_a_retry(make_policy):
    import decimal

    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 3, "RETRY_ON_EXCEPTIONS": ["decimal.InvalidOperation"]}
    )
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise decimal.InvalidOperation()
        return "third time"

    assert policy.call(flaky, idempotent=True) == "third time"
    with pytest.raises(ValueError):
        policy.call(lambda: int("x"), idempotent=True)
    assert len(attempts) == 3


def test_the_retry_floor_is_shared_by_every_process_of_a_service(
    make_policy, upstream, redis_server, settings
):
    """Each process once had the whole floor: N workers, N times the retries."""
    floor = {"BUDGET_RATIO": 0.0, "BUDGET_MIN_RETRIES_PER_SECOND": 0.5, "BUDGET_WINDOW": 4.0}
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 2, **floor},
        CIRCUIT_BREAKER={
            "STORAGE": redis_server.url,
            "MINIMUM_NUMBER_OF_CALLS": 100,
            "SLIDING_WINDOW_SIZE": 100,
        },
    )
    assert policy.breaker.state.link.wait_up(5)
    other_process = type(policy)(
        policy.config, namespace=settings.RESILIENCE_NAMESPACE, storage_options=conf.link_options()
    )
    client = ServiceClient("upstream")
    for _ in range(4):
        with pytest.raises(UpstreamStatusError):
            client.get("/status/503")
        with pytest.raises(UpstreamStatusError):
            other_process.run(
                client._attempt,
                (other_process, "GET", client.url("/status/503"), {}, None, None),
                {},
                idempotent=True,
            )
    assert upstream.count("/status") == 8 + 2  # 8 first attempts, 2 retries: the floor, once
    other_process.close()


def test_a_timeout_that_the_deadline_did_not_shorten_is_the_dependencys(make_policy):
    """Found in review: any timeout counted as cut short when the caller's deadline left a
    little less than CONNECT + READ, though every attempt ran its own full READ timeout, so a
    hung dependency never tripped the breaker under a tight deadline."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held = []
    threading.Thread(
        target=lambda: [held.append(server.accept()) for _ in range(20)], daemon=True
    ).start()
    policy = make_policy(
        TIMEOUT={"CONNECT": 0.3, "READ": 0.5},
        RETRY={"MAX_ATTEMPTS": 1},
        CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5},
    )
    from django.conf import settings

    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "upstream": f"http://127.0.0.1:{server.getsockname()[1]}",
    }
    policy = policies_get("upstream")
    try:
        for _ in range(5):
            with deadlines.scope(0.78), pytest.raises(Exception) as info:
                ServiceClient("upstream").get("/hung")
            assert type(info.value).__name__ == "UpstreamTimeoutError"
        assert policy.breaker.current_state == "open"
    finally:
        server.close()


def policies_get(name):
    from resilience import policies

    return policies[name]
