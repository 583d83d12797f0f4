"""docker-compose.yml against the code: every service, port, variable and database matches.

No Docker engine runs here, so the file is checked, not run: this is what can be checked.
"""

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from booking.settings import base

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
APP_CONTAINERS = [
    name
    for name, spec in COMPOSE["services"].items()
    if spec.get("image") == "concert-booking:local"
]
# Read by libraries or by the process runner rather than by our settings.
EXTERNAL_VARIABLES = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"}


def port_of(service: str) -> int:
    return urlparse(base.SERVICE_URLS[service]).port


def variables_read_by_the_code() -> set[str]:
    names = set()
    for path in [*(ROOT / "booking").rglob("*.py"), *(ROOT / "resilience").rglob("*.py")]:
        names |= set(
            re.findall(r'(?:env_\w+|environ\.get|getenv)\(\s*"([A-Z0-9_]+)"', path.read_text())
        )
    return names


def env(container: str) -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["services"][container]["environment"].items()}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_its_own_settings_on_its_own_port_and_database(service):
    spec, variables = COMPOSE["services"][service], env(service)
    assert variables["DJANGO_SETTINGS_MODULE"] == f"booking.settings.{service}"
    assert variables["GUNICORN_BIND"] == f"0.0.0.0:{port_of(service)}"
    # Published on the host's loopback only: the chaos API and the console's reads are for
    # this machine, as in the local stack.
    assert spec["ports"] == [f"127.0.0.1:{port_of(service)}:{port_of(service)}"]
    assert (
        urlparse(variables["DATABASE_URL"].replace("${POSTGRES_PASSWORD:-booking}", "pw")).path
        == f"/{service}"
    )
    assert f"127.0.0.1:{port_of(service)}/health/" in " ".join(spec["healthcheck"]["test"])


def test_no_port_is_published_beyond_the_hosts_loopback():
    published = [p for spec in COMPOSE["services"].values() for p in spec.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published)


def test_postgres_creates_exactly_the_service_databases():
    sql = (ROOT / "deploy/postgres/create-databases.sql").read_text()
    assert sorted(re.findall(r"CREATE DATABASE (\w+);", sql)) == sorted(SERVICES)


def test_every_container_finds_every_service_where_it_listens():
    for container in APP_CONTAINERS:
        variables = env(container)
        for service in SERVICES:
            assert variables[f"{service.upper()}_URL"] == f"http://{service}:{port_of(service)}", (
                container
            )


def test_no_variable_is_set_that_nothing_reads():
    """A misspelt variable would silently do nothing: every one set must be read somewhere."""
    known = variables_read_by_the_code() | EXTERNAL_VARIABLES
    for container in APP_CONTAINERS:
        assert set(env(container)) - known == set(), container


def test_start_order_waits_for_health():
    services = COMPOSE["services"]
    for container in APP_CONTAINERS:
        for dependency, condition in services[container]["depends_on"].items():
            assert dependency in services
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{container} waits on {dependency}"
    assert {"inventory", "payments", "notifications"} <= set(services["orders"]["depends_on"])
    assert {"inventory", "orders", "recommendations"} <= set(services["gateway"]["depends_on"])
    assert env("orders-worker")["DJANGO_SETTINGS_MODULE"] == "booking.settings.orders"
    assert env("orders-worker")["DATABASE_URL"] == env("orders")["DATABASE_URL"]


def test_demo_data_is_loaded_by_the_services_that_own_it():
    for container, spec in COMPOSE["services"].items():
        if container in APP_CONTAINERS:
            assert ("demo_data" in spec["command"]) == (
                container in ("inventory", "recommendations")
            ), container


def test_prometheus_scrapes_every_service():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    assert targets == {f"{service}:{port_of(service)}" for service in SERVICES} | {
        "orders-worker:9100"  # the task worker's own /metrics
    }
    assert COMPOSE["services"]["orders-worker"]["environment"]["ORDERS_WORKER_METRICS_PORT"] == 9100
