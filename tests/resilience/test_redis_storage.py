"""Breaker state shared through Redis: every process of a service sees the same breaker."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from resilience import conf
from resilience.breaker import CircuitBreaker
from resilience.exceptions import CircuitOpenError
from tests.ports import closed_port_url

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]

# Run in a separate interpreter: its own memory, the same Redis.
CHILD = """
import json, sys, threading
from resilience import conf
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from resilience.exceptions import CircuitOpenError

namespace, url, action, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = conf.build_config("payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": url}}})
breaker = CircuitBreaker("payments", config.circuit_breaker, clock=VirtualClock(), namespace=namespace)

def fail():
    raise ConnectionError("refused")

if action == "trip":
    for _ in range(config.circuit_breaker.minimum_number_of_calls):
        try:
            breaker.call(fail)
        except ConnectionError:
            pass
    print(json.dumps({"state": breaker.current_state}))
elif action == "trials":
    barrier = threading.Barrier(10)
    admitted = []
    def trial():
        barrier.wait()
        try:
            permit = breaker.acquire()
            admitted.append(permit)
        except CircuitOpenError:
            pass
    threads = [threading.Thread(target=trial) for _ in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps({"admitted": len(admitted)}))
"""


def child(namespace, action, cfg):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "booking.settings.test", "PYTHONPATH": str(ROOT)}
    script = "import django; django.setup()\n" + CHILD
    out = subprocess.run(
        [sys.executable, "-c", script, namespace, REDIS_URL, action, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make(namespace, **cfg):
    config = conf.build_config(
        "payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": REDIS_URL}}}
    )
    return CircuitBreaker("payments", config.circuit_breaker, namespace=namespace)


@pytest.fixture
def namespace():
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    from resilience.storage import redis_client

    client = redis_client(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


def test_a_breaker_tripped_in_one_process_is_open_in_another(namespace):
    here = make(namespace, MINIMUM_NUMBER_OF_CALLS=5)
    assert here.current_state == "closed"
    assert child(namespace, "trip", {"MINIMUM_NUMBER_OF_CALLS": 5}) == {"state": "open"}
    assert here.current_state == "open"
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")


def test_half_open_admits_exactly_the_permitted_trials_across_processes(namespace):
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.3,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
    }
    here = make(namespace, **cfg)
    child(namespace, "trip", cfg)
    assert here.current_state == "open"
    time.sleep(0.35)  # the open wait is timed by the Redis server's clock
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import django; django.setup()\n" + CHILD,
                namespace,
                REDIS_URL,
                "trials",
                json.dumps(cfg),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "booking.settings.test",
                "PYTHONPATH": str(ROOT),
            },
        )
        for _ in range(2)
    ]
    admitted = sum(
        json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])["admitted"] for p in procs
    )
    assert admitted == 3
    assert here.current_state == "half-open"


def test_trial_outcomes_from_several_processes_close_the_breaker(namespace):
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.2,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 2,
    }
    first, second = make(namespace, **cfg), make(namespace, **cfg)
    child(namespace, "trip", cfg)
    time.sleep(0.25)
    assert first.call(lambda: 1) == 1
    assert second.current_state == "half-open"
    assert second.call(lambda: 2) == 2
    assert first.current_state == "closed"


def test_manual_control_is_shared(namespace):
    first, second = make(namespace), make(namespace)
    first.force_open()
    assert (second.current_state, second.mode) == ("open", "forced-open")
    second.force_closed()
    assert (first.current_state, first.mode) == ("closed", "normal")


def test_without_redis_the_breaker_keeps_protecting_on_local_state(caplog):
    dead = closed_port_url("redis") + "/0"
    config = conf.build_config("payments", {"payments": {"CIRCUIT_BREAKER": {"STORAGE": dead}}})
    breaker = CircuitBreaker("payments", config.circuit_breaker, namespace="unreachable")

    def fail():
        raise ConnectionError()

    for _ in range(5):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "never")
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)


def test_trial_permits_lost_with_a_dead_process_do_not_wedge_the_breaker(namespace):
    """Another process took every trial permit and died; after the open wait a new round starts."""
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.3,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
    }
    here, doomed = make(namespace, **cfg), make(namespace, **cfg)
    child(namespace, "trip", cfg)
    time.sleep(0.35)
    lost = [doomed.acquire() for _ in range(3)]  # never recorded: its process is gone
    assert [kind for kind, _ in lost] == ["trial"] * 3
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")
    time.sleep(0.35)
    for _ in range(3):
        assert here.call(lambda: "ok") == "ok"
    assert here.current_state == "closed"
