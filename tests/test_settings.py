"""Every service's settings: they boot, pass the system checks, and pass check --deploy in production."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = (
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
    "recommendations",
    "console",
)
SECRET = secrets.token_urlsafe(50)  # made for this run only


def manage(service, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update(DJANGO_SETTINGS_MODULE=f"booking.settings.{service}", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_production_settings_pass_check_deploy(service):
    done = manage(
        service,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=SECRET,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_production_refuses_the_development_secret():
    done = manage("payments", "check", DJANGO_ENV="production", DJANGO_SECRET_KEY="")
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr


def test_postgresql_gets_a_bounded_pool_sized_from_the_environment(monkeypatch):
    from booking.settings.env import database

    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/booking_orders")
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "3")
    config = database("unused.sqlite3")
    assert config["OPTIONS"]["pool"]["max_size"] == 3
    assert config["CONN_MAX_AGE"] == 0  # Django refuses persistent connections with a pool
    monkeypatch.delenv("DATABASE_URL")
    assert "pool" not in database("x.sqlite3")["OPTIONS"]
