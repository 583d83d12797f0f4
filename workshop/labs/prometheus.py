"""``manage.py lab prometheus start|stop`` and ``lab alerts``: the real Prometheus (Debian's
``prometheus`` package, or any ``prometheus`` on the PATH) scraping the local stack every
second with the alert rules of ``deploy/prometheus/alerts.yml``, for lab 7.

It is the compose file's Prometheus, pointed at the local stack's ports instead of the
containers' names, with one-second scrapes and evaluations so that an alert with ``for: 0m``
fires within seconds. It runs in the background (its own process group, its pid in
``var/labs/prometheus/pid``) until ``lab prometheus stop`` or ``stack down``.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
import yaml
from django.conf import settings

from workshop.labs.progress import labs_dir
from workshop.scenarios.stack import SERVICES

RULES = Path(settings.BASE_DIR) / "deploy" / "prometheus" / "alerts.yml"


class PrometheusError(Exception):
    pass


def url() -> str:
    return settings.LAB_PROMETHEUS_URL.rstrip("/")


def home() -> Path:
    return labs_dir() / "prometheus"


def pid() -> int | None:
    """The pid of the Prometheus ``lab prometheus start`` started, if it still runs: the pid
    file's process must be a process group leader running ``prometheus`` on this lab's
    database (a pid file outliving its process, or a reused pid, is not trusted). A stale pid
    file is removed."""
    file = home() / "pid"
    try:
        found = int(file.read_text())
        command = Path(f"/proc/{found}/cmdline").read_bytes().split(b"\0")
        ours = (
            Path(command[0].decode()).name == "prometheus"
            and f"--storage.tsdb.path={home() / 'data'}".encode() in command
            and os.getpgid(found) == found
        )
    except (OSError, ValueError, IndexError):
        ours = False
    if not ours:
        file.unlink(missing_ok=True)
        return None
    return found


def config() -> dict:
    """deploy/prometheus/prometheus.yml with this stack's addresses and 1 s intervals."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "booking",
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [urlparse(settings.SERVICE_URLS[service]).netloc],
                        "labels": {"service": service},
                    }
                    for service in SERVICES
                ],
            }
        ],
    }


def start(out) -> None:
    if pid() is not None:
        out(f"Prometheus already runs (pid {pid()}): {url()}")
        return
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "no `prometheus` on the PATH: install it (Debian, Ubuntu: `sudo apt-get install "
            "prometheus`; or the release from prometheus.io), then run this again"
        )
    listen = urlparse(url()).netloc
    home().mkdir(parents=True, exist_ok=True)
    # A fresh database: the last samples of an earlier run (a breaker open then, from worker
    # processes long gone) would otherwise count as current for five minutes.
    shutil.rmtree(home() / "data", ignore_errors=True)
    conf = home() / "prometheus.yml"
    conf.write_text(yaml.safe_dump(config(), sort_keys=False))
    log = (home() / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={home() / 'data'}",
            f"--web.listen-address={listen}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not stopped by the terminal's Ctrl-C
    )
    (home() / "pid").write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (home() / "pid").unlink(missing_ok=True)
            raise PrometheusError(
                f"Prometheus exited with status {process.returncode} (is {listen} taken by "
                f"another Prometheus? set LAB_PROMETHEUS_URL); its log: "
                f"{home() / 'prometheus.log'}"
            )
        try:
            if requests.get(f"{url()}/-/ready", timeout=1).status_code == 200 and _ours():
                out(f"Prometheus is up: {url()} (pid {process.pid})")
                out(f"  scraping the six services every second, rules from {RULES}")
                out(f"  alerts: {url()}/alerts   the same from here: manage.py lab alerts")
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop(lambda line: None)
    raise PrometheusError(f"Prometheus was not ready within 30 s: {home() / 'prometheus.log'}")


def _ours() -> bool:
    """Whether the Prometheus answering at ``url()`` is the one started here (its database),
    not one that already listened on that port."""
    try:
        flags = requests.get(f"{url()}/api/v1/status/flags", timeout=1).json()["data"]
    except (requests.RequestException, ValueError, KeyError):
        return False
    return flags.get("storage.tsdb.path") == str(home() / "data")


def stop(out) -> None:
    running = pid()
    if running is None:
        out("Prometheus is not running.")
        return
    try:
        os.killpg(running, signal.SIGTERM)
    except ProcessLookupError:
        (home() / "pid").unlink(missing_ok=True)
        out("Prometheus is not running.")
        return
    for _ in range(100):
        try:
            os.kill(running, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running, signal.SIGKILL)
    (home() / "pid").unlink(missing_ok=True)
    out(f"Prometheus stopped (pid {running}).")


def get(path: str, **params) -> dict:
    try:
        answer = requests.get(f"{url()}{path}", params=params, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise PrometheusError(
            f"Prometheus does not answer at {url()} ({type(exc).__name__}): "
            "start it with `manage.py lab prometheus start`"
        ) from exc


def alerts() -> list[dict]:
    """Alerts pending or firing now, each with its labels, state and since when."""
    return get("/api/v1/alerts")["alerts"]


def describe(alert: dict) -> str:
    labels = alert["labels"]
    return (
        f"{alert['state']:<8} {labels['alertname']:<20} {labels.get('severity', ''):<8} "
        f"{labels.get('service', '?')} -> {labels.get('dependency', '?')}  "
        f"(since {alert.get('activeAt', '?')[:19].replace('T', ' ')})"
    )
