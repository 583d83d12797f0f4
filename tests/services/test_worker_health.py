"""The task worker's liveness (a file its heartbeat touches) and its metrics in orders' directory.

Real processes, real prometheus_client files: a "worker" here is a Python process that starts
as ``manage.py orders_worker`` does (``worker_health.started()``), calls through orders'
payments policy, and is then SIGKILLed or left to exit, while this test reads the directory
as orders' ``/metrics`` does (MultiProcessCollector).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from booking import gunicorn_conf
from orders import worker_health
from resilience import multiprocess
from tests.ports import closed_port_url

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys, time, django
django.setup()
from booking import gunicorn_conf
from tests.ports import closed_port_url
from orders import worker_health
worker_health.started()
from resilience import metrics, policies
policy = policies["payments"]
policy.call(lambda: "charged", idempotent=True)
policy.breaker.force_open()
metrics.flush()
print("ready", flush=True)
if sys.argv[1] == "stay":
    time.sleep(120)
"""


def environment(directory: Path, var: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RESILIENCE_"))}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "booking.settings.orders",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "BOOKING_VAR_DIR": str(var),
        "PYTHONPATH": str(ROOT),
    }


def start_worker(directory: Path, var: Path, then: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, then],
        env=environment(directory, var),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def scrape(directory: Path) -> dict[tuple, float]:
    """What orders' /metrics shows: every process's file, summed by each gauge's mode."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("name") == "payments"
    }


def calls(scraped) -> float:
    key = ("resilience_circuitbreaker_calls_total", ("kind", "successful"), ("name", "payments"))
    return scraped.get(key, 0.0)


def process_states(scraped) -> set[str]:
    """The pids with a per-process breaker series (multiprocess mode liveall)."""
    return {
        dict(key[1:])["pid"]
        for key in scraped
        if key[0] == "resilience_circuitbreaker_process_state"
    }


def free_slots(scraped) -> float | None:
    key = ("resilience_bulkhead_available_concurrent_calls", ("name", "payments"))
    return scraped.get(key)


@pytest.fixture
def alive_file(settings, tmp_path):
    settings.ORDERS_WORKER_ALIVE_FILE = str(tmp_path / "beats" / "orders-worker.alive")
    return Path(settings.ORDERS_WORKER_ALIVE_FILE)


def test_a_sigkilled_workers_live_gauges_stay_until_the_next_worker_sweeps_them(tmp_path):
    directory = tmp_path / "prometheus" / "orders"  # nobody made it: started() does
    killed = start_worker(directory, tmp_path, "stay")
    live = scrape(directory)
    assert calls(live) == 1.0
    assert process_states(live) == {str(killed.pid)}
    assert live[("resilience_circuitbreaker_state", ("name", "payments"), ("state", "open"))] == 1.0
    slots = free_slots(live)
    assert slots > 0

    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    after_kill = scrape(directory)
    # Nothing marked it dead: its gauges still count, as if it ran.
    assert process_states(after_kill) == {str(killed.pid)}
    assert free_slots(after_kill) == slots

    # The next worker sweeps them at its start, then exits cleanly and takes its own away.
    start_worker(directory, tmp_path, "exit").wait(timeout=30)
    swept = scrape(directory)
    assert process_states(swept) == set()
    assert free_slots(swept) is None
    assert calls(swept) == 2.0  # counters of dead processes still count: their calls happened


def test_a_beat_sweeps_a_dead_processs_gauges_and_keeps_the_living(
    tmp_path, monkeypatch, alive_file
):
    directory = tmp_path / "prometheus"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    living = start_worker(directory, tmp_path, "stay")
    dead = start_worker(directory, tmp_path, "stay")
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=10)
    try:
        assert process_states(scrape(directory)) == {str(living.pid), str(dead.pid)}
        worker_health.beat()
        assert process_states(scrape(directory)) == {str(living.pid)}
    finally:
        living.kill()
        living.wait(timeout=10)


def test_gunicorn_keeps_the_files_of_a_running_worker_and_drops_an_earlier_runs(
    tmp_path, monkeypatch
):
    """orders' gunicorn used to remove every file at its start, the running worker's too."""
    directory = tmp_path / "prometheus"
    earlier = start_worker(directory, tmp_path, "exit")
    earlier.wait(timeout=30)
    running = start_worker(directory, tmp_path, "stay")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    try:
        gunicorn_conf.on_starting(server=None)
        assert set(multiprocess.files_by_pid(str(directory))) == {running.pid}
        assert calls(scrape(directory)) == 1.0
    finally:
        running.kill()
        running.wait(timeout=10)


# -- liveness ------------------------------------------------------------------------------------


def test_a_beat_touches_the_file_without_the_database(alive_file):
    """No django_db mark: pytest-django refuses any query here, so a beat that asked would fail."""
    assert worker_health.age() is None
    worker_health.beat()
    assert 0 <= worker_health.age() < 5


def test_the_probe_passes_after_a_beat_and_fails_when_the_file_is_old_or_missing(alive_file):
    with pytest.raises(SystemExit) as missing:
        call_command("orders_worker_alive", "--max-age", "30")
    assert missing.value.code == 1

    worker_health.touch()
    call_command("orders_worker_alive", "--max-age", "30")  # returns: exit 0

    an_hour_ago = time.time() - 3600
    os.utime(alive_file, (an_hour_ago, an_hour_ago))
    with pytest.raises(SystemExit) as stale:
        call_command("orders_worker_alive", "--max-age", "30")
    assert stale.value.code == 1


def test_the_probe_runs_with_the_database_unreachable(tmp_path):
    env = {
        **environment(tmp_path / "prometheus", tmp_path),
        "DATABASE_URL": "postgres://booking:nothing@127.0.0.1:1/orders",
    }
    probe = [sys.executable, "manage.py", "orders_worker_alive", "--max-age", "30"]
    never = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert never.returncode == 1, never.stderr
    assert "never touched" in never.stderr
    (tmp_path / "orders-worker.alive").touch()  # the default path, under BOOKING_VAR_DIR
    beat = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert beat.returncode == 0, beat.stderr


def test_a_process_that_no_gunicorn_started_makes_its_metrics_directory(tmp_path):
    """The URLs load for the system checks, before any command runs, and chaos's gauge with
    them: without the resilience app making the directory, the worker failed right there."""
    directory = tmp_path / "prometheus" / "orders"
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment(directory, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert any(name.endswith(".db") for name in os.listdir(directory))


def test_in_its_own_container_the_worker_serves_its_policies_on_its_own_metrics_port(
    monkeypatch,
):
    """Compose and Kubernetes: no metrics directory shared with orders; the worker's calls,
    retries and breaker transitions reach Prometheus on ORDERS_WORKER_METRICS_PORT."""
    import urllib.request

    from resilience import metrics, policies
    from tests.ports import free_ports

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    policy = policies["payments"]
    policy.call(lambda: "charged", idempotent=True)
    policy.breaker.force_open()
    metrics.flush()
    [port] = free_ports(1)
    server = worker_health.serve_metrics(port, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
    lines = body.decode().splitlines()
    assert any(
        line.startswith("resilience_circuitbreaker_calls_total{")
        and 'name="payments"' in line
        and 'kind="successful"' in line
        for line in lines
    ), [line for line in lines if "payments" in line][:10]


def test_orders_metrics_are_served_while_its_database_is_unreachable(tmp_path):
    """orders_parked is read from the database at scrape time; with the database down (a
    PostgreSQL URL whose port nothing listens on) the scrape still answers 200 with every other
    series, and orders_parked is left out of it rather than failing the whole scrape."""
    reader = """
import django; django.setup()
from django.test import Client
from resilience import metrics
metrics.breaker_calls.labels("payments", "failed").inc(2)
response = Client(HTTP_HOST="127.0.0.1").get("/metrics")
print(response.status_code)
print(response.content.decode())
"""
    port = closed_port_url().rsplit(":", 1)[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "booking.settings.orders",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/orders",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", reader], env=env, timeout=60, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    status, text = done.stdout.split("\n", 1)
    assert status == "200"
    assert 'resilience_circuitbreaker_calls_total{kind="failed",name="payments"} 2.0' in text
    assert "orders_parked" not in text
    assert "orders_parked: the database did not answer" in done.stderr
