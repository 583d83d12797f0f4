"""What a fault does to a request, decided from the fault spec in ``chaos.store``."""

import random
import time

from django.http import JsonResponse
from prometheus_client import Counter, Gauge

from chaos import store

MAX_HOLD = 300.0  # a hang never outlives this, so a forgotten fault cannot hold a thread forever
POLL = 0.05

injected = Counter("chaos_injected", "Faults injected into requests, by kind.", ["kind"])
active = Gauge(
    "chaos_fault_active", "1 while a fault is set on this service.", multiprocess_mode="livemax"
)


def matches(fault: dict, request) -> bool:
    match = fault.get("match") or {}
    if match.get("path_prefix") and not request.path.startswith(match["path_prefix"]):
        return False
    if match.get("method") and request.method != match["method"].upper():
        return False
    header = match.get("header")
    return not header or request.headers.get(header["name"]) == header["value"]


def _still(fault: dict) -> bool:
    return store.current() == fault


def wait(seconds: float, fault: dict) -> None:
    """Sleep up to ``seconds``, ending at once when the fault is lifted or changed."""
    end = time.monotonic() + min(seconds, MAX_HOLD)
    while time.monotonic() < end and _still(fault):
        time.sleep(min(POLL, max(0.0, end - time.monotonic())))


def error(fault: dict, kind: str) -> JsonResponse:
    injected.labels(kind).inc()
    status = fault.get("error_status") or 503
    return JsonResponse(
        {"code": "chaos_injected", "message": f"Fault injected by the chaos API ({kind})."},
        status=status,
    )


def before(fault: dict) -> JsonResponse | None:
    """Apply the fault before the view runs; a response means the view does not run."""
    if fault.get("hang"):
        injected.labels("hang").inc()
        wait(MAX_HOLD, fault)
        if not _still(fault):
            return None  # lifted: the request goes on as if nothing happened
    if fault.get("latency_ms"):
        injected.labels("latency").inc()
        wait(fault["latency_ms"] / 1000, fault)
    if fault.get("fail_next") and store.take_fail_next():
        return error(fault, "fail_next")
    rate = fault.get("error_rate") or 0
    if rate and random.random() < rate:
        return error(fault, "error_rate")
    return None


def after(fault: dict) -> None:
    """The work is done; answer late (the "timed out but charged" case)."""
    if fault.get("delay_response_ms"):
        injected.labels("delay_response").inc()
        wait(fault["delay_response_ms"] / 1000, fault)
