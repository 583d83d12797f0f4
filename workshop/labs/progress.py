"""Where a lab stands, read from the stack itself: what it counted since ``lab start``.

``lab start`` takes a ``Snapshot`` of the running stack (every service's counters, the pid of
every program, and for some labs the ledgers) and keeps it in ``var/labs/<lab>.json``.
``lab check`` takes another and compares: a checkpoint asserts on what moved in between
(counters, transitions, new orders and charges), so that what an earlier lab did, or a
previous attempt at this one, never counts. A service restarted in between (its gunicorn
master has another pid) counted from zero since, as Prometheus' ``rate`` assumes.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from workshop.scenarios.stack import SERVICES, RunningStack
from workshop.stack import Stack

Sample = tuple[str, dict[str, str], float]


def labs_dir() -> Path:
    return Path(settings.VAR_DIR) / "labs"


def running_stack() -> RunningStack:
    """The stack ``make up`` started, as the scenario runner drives it. ``StackError`` if it
    is not running."""
    return Stack(out=lambda line: None).attached()


@dataclass
class Snapshot:
    taken: float  # time.time()
    pids: dict[str, int | None]  # supervisor program -> pid of its main process
    metrics: dict[str, list[Sample] | None]  # service -> its /metrics (None: no answer)
    ledger: dict | None = None  # manage.py ledger of orders, payments, inventory, notifications

    @classmethod
    def take(cls, stack: RunningStack, *, ledger: bool = False) -> "Snapshot":
        with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
            metrics = dict(
                zip(SERVICES, pool.map(lambda s: _metrics(stack, s), SERVICES), strict=True)
            )
        pids = {
            info["name"]: info["pid"] if info["statename"] == "RUNNING" else None
            for info in stack.supervisor().getAllProcessInfo()
        }
        return cls(time.time(), pids, metrics, stack.ledger() if ledger else None)

    def unread(self) -> list[str]:
        """Services whose /metrics did not answer."""
        return [service for service, samples in self.metrics.items() if samples is None]

    def samples(self, service: str) -> list[Sample]:
        return self.metrics.get(service) or []

    def total(self, service: str, metric: str, /, **labels) -> float | None:
        """The sum of a metric's samples with these labels, or None if it has none."""
        found = [
            value
            for name, sample_labels, value in self.samples(service)
            if name == metric and all(sample_labels.get(k) == v for k, v in labels.items())
        ]
        return sum(found) if found else None

    # -- kept between `lab start` and `lab check` --------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        data = json.loads(path.read_text())
        data["metrics"] = {
            service: None
            if samples is None
            else [(name, labels, value) for name, labels, value in samples]
            for service, samples in data["metrics"].items()
        }
        return cls(**data)


def _metrics(stack: RunningStack, service: str) -> list[Sample] | None:
    """Every sample of the service's /metrics, or None if it did not answer."""
    try:
        answer = requests.get(stack.url(service, "/metrics"), timeout=5)
        answer.raise_for_status()
    except requests.RequestException:
        return None
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


@dataclass
class Since:
    """What changed between two snapshots."""

    start: Snapshot
    now: Snapshot
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.now.taken - self.start.taken

    def restarted(self, program: str) -> bool:
        return self.start.pids.get(program) != self.now.pids.get(program)

    def value(self, service: str, metric: str, /, **labels) -> float | None:
        return self.now.total(service, metric, **labels)

    def delta(self, service: str, metric: str, /, **labels) -> float:
        """How much a counter grew since the start (counted from 0 after a restart)."""
        now = self.now.total(service, metric, **labels) or 0.0
        if self.restarted(service):
            return now
        before = self.start.total(service, metric, **labels) or 0.0
        return now - before if now >= before else now

    def transitions(self, service: str, policy: str) -> dict[str, float]:
        """``"closed->open"`` -> how many times, since the start."""
        found = {}
        for name, labels, _ in self.now.samples(service):
            if name == "resilience_circuitbreaker_transitions_total" and labels["name"] == policy:
                key = f"{labels['from_state']}->{labels['to_state']}"
                found[key] = self.delta(
                    service,
                    name,
                    name=policy,
                    from_state=labels["from_state"],
                    to_state=labels["to_state"],
                )
        return found

    def killed(self) -> list[str]:
        """Programs whose main process is not the one that ran at the start."""
        return sorted(p for p in self.start.pids if self.restarted(p))

    # -- the ledgers (labs that take them) -------------------------------------------------------

    def new_orders(self) -> list[dict]:
        known = {o["id"] for o in self.start.ledger["orders"]["orders"]}
        return [o for o in self.now.ledger["orders"]["orders"] if o["id"] not in known]

    def new_charges(self) -> list[dict]:
        known = {c["id"] for c in self.start.ledger["payments"]["charges"]}
        return [c for c in self.now.ledger["payments"]["charges"] if c["id"] not in known]
