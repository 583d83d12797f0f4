"""What the control room knows: every service read once a second, in the background.

A ``Watcher`` (one per console process) reads each service's ``/health/``, ``/metrics`` and
``/chaos/`` in parallel, with short timeouts, and the stack's processes from supervisor. It
keeps the last minute of readings, turns them into the picture ``/api/state`` answers (rates
and percentiles are differences between two readings, as Prometheus' ``rate`` and
``histogram_quantile`` would compute them), and writes an event for every change it sees. A
request never waits on a service: it reads the last picture.
"""

import json
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from workshop.console import graph

logger = logging.getLogger("workshop.console")

TIMEOUT = 0.8  # per read: a hung service must not hold the control room
RATE_WINDOW = 5.0  # seconds of readings behind calls/s, retries/s, fallbacks/s
LATENCY_WINDOW = 15.0  # seconds of readings behind p50/p99
SEVERITY = {"closed": 0, "half-open": 1, "open": 2}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Reading:
    """One read of one service: up or not, its health, its metric samples, its fault."""

    def __init__(self, service: str, at: float) -> None:
        self.service = service
        self.at = at
        self.up = False
        self.error = ""
        self.health: dict = {}
        self.samples: list[tuple[str, dict, float]] = []
        self.fault: dict | None = None  # None: no answer from /chaos/; {}: no fault

    def values(self, metric: str, /, **labels) -> list[tuple[dict, float]]:
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples
            if sample_name == metric
            and all(sample_labels.get(key) == want for key, want in labels.items())
        ]

    def total(self, metric: str, /, **labels) -> float | None:
        found = self.values(metric, **labels)
        return sum(value for _, value in found) if found else None


def read_service(service: str, url: str, token: str) -> Reading:
    reading = Reading(service, time.monotonic())
    session = requests.Session()
    session.trust_env = False
    try:
        health = session.get(f"{url}/health/", timeout=TIMEOUT)
        reading.up = health.status_code == 200
        reading.health = (
            health.json()
            if health.headers.get("Content-Type", "").startswith("application/json")
            else {}
        )
        if not reading.up:
            reading.error = f"/health/ answered {health.status_code}"
    except (requests.RequestException, ValueError) as exc:
        reading.error = type(exc).__name__
    try:
        text = session.get(f"{url}/metrics", timeout=TIMEOUT).text
        reading.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (requests.RequestException, ValueError):
        pass
    if token:
        try:
            answer = session.get(
                f"{url}/chaos/", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
            )
            if answer.status_code == 200:
                reading.fault = answer.json().get("fault") or {}
        except (requests.RequestException, ValueError):
            pass
    return reading


def _counter(reading: Reading | None, metric: str, /, **labels) -> float | None:
    return None if reading is None else reading.total(metric, **labels)


def rate(now: Reading, then: Reading | None, metric: str, /, **labels) -> float | None:
    """Per second between two readings; a counter that went down (a restart) counts from 0."""
    current = _counter(now, metric, **labels)
    if current is None or then is None or now.at <= then.at:
        return None
    before = _counter(then, metric, **labels) or 0.0
    delta = current - before if current >= before else current
    return delta / (now.at - then.at)


def quantile(
    q: float, now: Reading, then: Reading | None, metric: str, /, **labels
) -> float | None:
    """``histogram_quantile`` over the buckets added between two readings (all outcomes but
    ignored ones), interpolated linearly inside the bucket, as Prometheus does."""
    if then is None:
        return None

    def buckets(reading: Reading) -> dict[float, float]:
        found: dict[float, float] = {}
        for labels_, value in reading.values(f"{metric}_bucket", **labels):
            if labels_.get("outcome") == "ignored":
                continue
            bound = float(labels_["le"])
            found[bound] = found.get(bound, 0.0) + value
        return found

    later, earlier = buckets(now), buckets(then)
    deltas = sorted((bound, later[bound] - earlier.get(bound, 0.0)) for bound in later)
    if not deltas or deltas[-1][1] <= 0:
        return None
    total = deltas[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in deltas:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return None


class Watcher:
    def __init__(
        self,
        urls: dict[str, str],
        token: str,
        *,
        interval: float = 1.0,
        processes=None,
        events_file: Path | None = None,
    ) -> None:
        self.urls = urls
        self.token = token
        self.interval = interval
        self.processes = processes  # () -> {program: state}, or None without supervisor
        self.history: deque[dict[str, Reading]] = deque(maxlen=int(60 / interval) + 1)
        self.program_states: dict[str, str] = {}
        self.events: deque[dict] = deque(maxlen=300)
        self.events_file = events_file
        self.landed: dict[str, dict] = {}  # service -> the check of the last fault set
        # service -> the fault the control room itself just set ({} for lifted): its own
        # event says so already, the reading that shows it is not news.
        self.expected_faults: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(urls) + 1, thread_name_prefix="console")
        self._thread: threading.Thread | None = None
        self._load_events()

    # -- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="console-watch", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                self.poll()
            except Exception:  # a bad reading must never stop the control room
                logger.exception("console: a poll failed")
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    def poll(self) -> None:
        futures = {
            service: self._pool.submit(read_service, service, url, self.token)
            for service, url in self.urls.items()
        }
        readings = {service: future.result() for service, future in futures.items()}
        programs = {}
        if self.processes is not None:
            try:
                programs = self.processes()
            except Exception as exc:  # supervisor gone: the stack is going down
                logger.warning("console: supervisor unreadable: %s", exc)
        with self._lock:
            previous = self.history[-1] if self.history else None
            self.history.append(readings)
            old_programs, self.program_states = self.program_states, programs
        self._note_changes(previous, readings, old_programs, programs)

    # -- events ------------------------------------------------------------------------------------

    def event(self, kind: str, text: str, **extra) -> None:
        entry = {"at": _now(), "kind": kind, "text": text, **extra}
        with self._lock:
            self.events.append(entry)
        if self.events_file is not None:
            try:
                with self.events_file.open("a") as file:
                    file.write(json.dumps(entry) + "\n")
            except OSError:
                pass

    def _load_events(self) -> None:
        if self.events_file is None or not self.events_file.exists():
            return
        for line in self.events_file.read_text().splitlines()[-self.events.maxlen :]:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def _note_changes(self, previous, readings, old_programs, programs) -> None:
        if previous is None:
            return
        for service, reading in readings.items():
            before = previous.get(service)
            if before.up != reading.up:
                self.event(
                    "service",
                    f"{service} is {'up' if reading.up else 'down'}"
                    + ("" if reading.up else f" ({reading.error})"),
                    service=service,
                )
            if (
                reading.fault is not None
                and before.fault is not None
                and reading.fault != before.fault
            ):
                if self.expected_faults.pop(service, None) == reading.fault:
                    continue
                if reading.fault:
                    self.event(
                        "fault",
                        f"{service}: fault set {describe_fault(reading.fault)}",
                        service=service,
                    )
                else:
                    self.event("fault", f"{service}: fault lifted", service=service)
        old_edges = {edge["id"]: edge for edge in self.edges(previous, None)}
        for edge in self.edges(readings, previous):
            old = old_edges.get(edge["id"])
            if old and old["state"] and edge["state"] and old["state"] != edge["state"]:
                self.event(
                    "breaker",
                    f"{edge['caller']} -> {edge['callee']}: {old['state']} -> {edge['state']}",
                    edge=edge["id"],
                )
        for program, state in programs.items():
            if old_programs and old_programs.get(program) != state:
                self.event("process", f"{program}: {state.lower()}", program=program)

    # -- the picture -------------------------------------------------------------------------------

    def _reading_before(self, seconds: float) -> dict[str, Reading] | None:
        """The readings of about ``seconds`` ago (the oldest kept if the history is shorter)."""
        with self._lock:
            history = list(self.history)
        if len(history) < 2:
            return None
        target = history[-1][next(iter(history[-1]))].at - seconds
        for readings in reversed(history[:-1]):
            if next(iter(readings.values())).at <= target:
                return readings
        return history[0]

    def edges(
        self, readings: dict[str, Reading], previous: dict[str, Reading] | None
    ) -> list[dict]:
        older = self._reading_before(RATE_WINDOW) or previous
        oldest = self._reading_before(LATENCY_WINDOW) or previous
        return [
            edge_view(
                caller,
                callee,
                readings[caller],
                (older or {}).get(caller),
                (oldest or {}).get(caller),
            )
            for caller, callee in graph.edges()
            if caller in readings
        ]

    def state(self) -> dict:
        with self._lock:
            readings = self.history[-1] if self.history else None
            previous = self.history[-2] if len(self.history) > 1 else None
            events = list(self.events)[-60:]
            programs = dict(self.program_states)
            landed = dict(self.landed)
        if readings is None:
            return {"ready": False, "services": [], "edges": [], "events": events}
        return {
            "ready": True,
            "read_at": _now(),
            "services": [
                service_view(service, reading, programs, landed.get(service))
                for service, reading in readings.items()
            ],
            "edges": self.edges(readings, previous),
            "processes": programs,
            "events": events,
        }


def describe_fault(fault: dict) -> str:
    parts = []
    if fault.get("hang"):
        parts.append("hang")
    if fault.get("latency_ms"):
        parts.append(f"+{fault['latency_ms']} ms")
    if fault.get("error_rate"):
        parts.append(f"{fault['error_rate']:.0%} errors ({fault.get('error_status', 503)})")
    if fault.get("fail_next"):
        parts.append(f"fail next {fault['fail_next']}")
    if fault.get("delay_response_ms"):
        parts.append(f"answer {fault['delay_response_ms']} ms after the work")
    match = fault.get("match") or {}
    scope = (
        " ".join(str(x) for x in (match.get("method"), match.get("path_prefix")) if x)
        or "every request"
    )
    if match.get("header"):
        scope += f" with {match['header']['name']}: {match['header']['value']}"
    return f"{', '.join(parts) or 'none'} on {scope}"


def service_view(service: str, reading: Reading, programs: dict, landed: dict | None) -> dict:
    return {
        "name": service,
        "up": reading.up,
        "error": reading.error,
        "worker": reading.health.get("worker"),
        "fault": reading.fault,
        "fault_text": describe_fault(reading.fault) if reading.fault else "",
        "fault_readable": reading.fault is not None,
        "process": programs.get(service),
        # The last check stays shown while the service cannot say (too busy to answer).
        "landed": landed if reading.fault or reading.fault is None else None,
    }


def _setting(reading: Reading, callee: str, setting: str) -> float | None:
    return reading.total("resilience_policy_setting", name=callee, setting=setting)


def edge_view(caller: str, callee: str, now: Reading, then: Reading | None, oldest) -> dict:
    """One call edge, as a tile shows it. ``None`` values are "no data yet"."""
    breaker = (now.health.get("circuit_breakers") or {}).get(callee, {})
    storage = breaker.get("storage")
    per_process = {}
    for labels, value in now.values("resilience_circuitbreaker_process_state", name=callee):
        if value:
            per_process[labels.get("pid", "this process")] = labels["state"]
    shared = [
        labels["state"]
        for labels, value in now.values("resilience_circuitbreaker_state", name=callee)
        if value
    ]
    if storage == "redis" and shared:
        state, how = shared[0], "shared (Redis)"
    elif per_process:
        state = max(per_process.values(), key=SEVERITY.get)
        opened = sum(1 for s in per_process.values() if s == state)
        how = f"worst of {len(per_process)} worker(s): {state} in {opened}"
    else:
        state, how = (shared[0] if shared else None), "no worker has called yet"
    calls_per_second = rate(now, then, "resilience_retry_calls_total", name=callee)

    def per_second(metric: str, **labels) -> float | None:
        """A rate, 0 while calls flow but this counter was never counted."""
        found = rate(now, then, metric, name=callee, **labels)
        return found if found is not None or calls_per_second is None else 0.0

    failure_rate = now.total("resilience_circuitbreaker_failure_rate", name=callee)
    slow_rate = now.total("resilience_circuitbreaker_slow_call_rate", name=callee)
    available = now.total("resilience_bulkhead_available_concurrent_calls", name=callee)
    maximum = now.total("resilience_bulkhead_max_allowed_concurrent_calls", name=callee)
    calls = now.total("resilience_retry_calls_total", name=callee)
    return {
        "id": f"{caller}->{callee}",
        "caller": caller,
        "callee": callee,
        "state": state,
        "mode": breaker.get("mode"),
        "state_source": how,
        "workers": per_process,
        "storage": storage,
        "calls_total": calls,
        "failure_rate": None if failure_rate is None or failure_rate < 0 else failure_rate,
        "failure_rate_threshold": _setting(now, callee, "failure_rate_threshold"),
        "slow_call_rate": None if slow_rate is None or slow_rate < 0 else slow_rate,
        "slow_call_rate_threshold": _setting(now, callee, "slow_call_rate_threshold"),
        "calls_per_second": calls_per_second,
        "retries_per_second": per_second("resilience_retry_attempts_total"),
        "fallbacks_per_second": per_second("resilience_fallback_calls_total"),
        "rejected_per_second": per_second("resilience_bulkhead_calls_total", kind="rejected"),
        "not_permitted_per_second": per_second(
            "resilience_circuitbreaker_calls_total", kind="not_permitted"
        ),
        "p50": quantile(0.5, now, oldest, "resilience_call_duration_seconds", name=callee),
        "p99": quantile(0.99, now, oldest, "resilience_call_duration_seconds", name=callee),
        "attempt_timeout": _setting(now, callee, "attempt_timeout_seconds"),
        "deadline": _setting(now, callee, "deadline_seconds"),
        "bulkhead_in_use": None if maximum is None else maximum - (available or 0.0),
        "bulkhead_max": maximum,
        "rejections_total": now.total(
            "resilience_bulkhead_calls_total", name=callee, kind="rejected"
        ),
    }
