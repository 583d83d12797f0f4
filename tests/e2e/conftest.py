"""The real stack for end-to-end tests: gunicorn processes on free 127.0.0.1 ports, supervised,
in a temporary directory; stopped at the end of the session even when a test fails.

On CI's PostgreSQL + Redis pass (``DATABASE_URL`` is PostgreSQL, ``REDIS_URL`` set), each
service gets its own PostgreSQL database and the breakers and the gateway cache use Redis.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
STARTUP_TIMEOUT = 120


class RunningStack:
    def __init__(self, var_dir: Path) -> None:
        # Several stacks run in one test session: each its own databases, Redis keys and token.
        self.id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.var_dir = var_dir
        self.urls = {
            name: f"http://127.0.0.1:{port}"
            for name, port in zip(SERVICES, free_ports(6), strict=True)
        }
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
            },
            "DJANGO_SETTINGS_MODULE": "booking.settings.base",
            "BOOKING_VAR_DIR": str(var_dir),
            "ORDERS_SETTLE_BACKOFF_INITIAL": "1",
            "ORDERS_SETTLE_BACKOFF_MAX": "2",
            "GUNICORN_WORKERS": "2",
            "CHAOS_TOKEN": f"e2e-{self.id}-chaos",
            **{f"{name.upper()}_URL": url for name, url in self.urls.items()},
        }
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith("postgres"):
            base = urlparse(database_url)
            self.env["STACK_DATABASE_URL"] = base._replace(
                path=f"/e2e_{self.id}_{{service}}"
            ).geturl()
        if os.environ.get("REDIS_URL"):
            self.env["RESILIENCE_STORAGE_URL"] = os.environ["REDIS_URL"]
            self.env["CACHE_URL"] = os.environ["REDIS_URL"]
            self.env["BOOKING_NAMESPACE"] = f"e2e-{self.id}"

    def manage(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        done = self.manage("stack", "up", timeout=STARTUP_TIMEOUT + 60)
        if done.returncode:
            raise RuntimeError(f"stack up failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")

    def down(self) -> None:
        self.manage("stack", "down", timeout=60)
        self.cleanup()

    def cleanup(self) -> None:
        """Drop this stack's PostgreSQL databases and Redis keys, if it had any."""
        if "STACK_DATABASE_URL" in self.env:
            self.manage(
                "shell",
                "-c",
                "from booking.stack import Stack; Stack().drop_databases()",
                timeout=60,
            )
        if "BOOKING_NAMESPACE" in self.env:
            import redis

            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            namespace = self.env["BOOKING_NAMESPACE"]
            keys = [*client.scan_iter(f"{namespace}:*"), *client.scan_iter(f":*:{namespace}*")]
            if keys:
                client.delete(*keys)

    def logs(self) -> str:
        parts = []
        for log in sorted((self.var_dir / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    @property
    def chaos_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['CHAOS_TOKEN']}"}

    def url(self, service: str, path: str) -> str:
        return self.urls[service] + path

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.25):
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"not true within {timeout} s")
            time.sleep(interval)

    def healthy(self, service: str) -> bool:
        try:
            return requests.get(self.url(service, "/health/"), timeout=2).status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture(scope="module")  # one stack at a time: two on 2 cores skew latency bounds
def stack(tmp_path_factory):
    running = RunningStack(tmp_path_factory.mktemp("stack"))
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture(autouse=True)
def resilience_test_mode():
    """End-to-end tests run in real time against real processes: no virtual clock here."""
    yield
