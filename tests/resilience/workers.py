"""Worker processes that share a PROMETHEUS_MULTIPROC_DIR, as gunicorn's do, and one scrape of
what /metrics then merges from them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_READER = """
import django; django.setup()
from django.test import Client
print(Client(HTTP_HOST="127.0.0.1").get("/metrics").content.decode())
"""


def env(directory: Path) -> dict:
    return {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "booking.settings.test",
        "PYTHONPATH": str(ROOT),
    }


def run_worker(directory: Path, script: str, *argv: str) -> None:
    """Run ``script`` (which sets Django up itself) in a process of its own, to its end."""
    subprocess.run(
        [sys.executable, "-c", script, *argv], env=env(directory), check=True, timeout=60
    )


def scrape(directory: Path) -> str:
    """/metrics as a fresh process serves it: every worker's files, merged."""
    return subprocess.run(
        [sys.executable, "-c", _READER],
        env=env(directory),
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
