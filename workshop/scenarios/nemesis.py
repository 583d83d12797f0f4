"""A seeded Chaos Monkey: SIGKILLs the processes of a running stack, at random, under load.

Netflix's Chaos Monkey kills instances to prove the system holds. This one kills, with
SIGKILL (no clean-up, no last words), one of:

- a gunicorn worker process of a service (its master starts another);
- a whole service (master and workers; supervisor starts it again);
- the task worker, or the hold sweeper;

and, on its fixed schedule, two worst moments:

- the task worker while it runs a task (payments hangs on charges, so that the worker's
  charge attempts run long; the moment a task is RUNNING, the worker dies);
- payments after it charged and before it answered (payments answers charges 3 s late; the
  moment a charge is in its table, payments dies with the answer unsent).

The same seed gives the same choices in the same order (the moments depend on the load).
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workshop.scenarios.stack import SERVICES, RunningStack

CHARGES = {"path_prefix": "/api/charges/"}
# Weights of the random kills.
KILLS = (("worker process", 4), ("service", 3), ("task worker", 2), ("sweeper", 1))


@dataclass
class Nemesis:
    stack: RunningStack
    seed: int
    clock: Callable[[], float]  # seconds since the load started
    until: float  # stop choosing victims after this many seconds of load
    out: Callable[[str], None] = lambda line: None
    worst_moments_at: tuple[float, ...] = (8.0, 25.0)
    events: list[tuple[float, str]] = field(default_factory=list)
    kills: int = 0
    worker_kills_mid_task: int = 0
    payments_kills_after_charge: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=60)

    def _log(self, what: str) -> None:
        at = round(self.clock(), 2)
        self.events.append((at, what))
        self.out(f"[nemesis] {at:5.1f} s  {what}")

    # -- the schedule ------------------------------------------------------------------------------

    def _run(self) -> None:
        worst = list(self.worst_moments_at)
        while not self._halt.is_set() and self.clock() < self.until:
            if self._halt.wait(self.rng.uniform(1.0, 3.0)):
                return
            try:
                if worst and self.clock() >= worst[0]:
                    moment = worst.pop(0)
                    if moment == self.worst_moments_at[0]:
                        self.kill_the_worker_mid_task()
                    else:
                        self.kill_payments_after_a_charge()
                else:
                    self.kill_at_random()
            except Exception as exc:  # a victim that was already dead, a stack restarting
                self._log(f"(missed: {type(exc).__name__}: {exc})")

    def kill_at_random(self) -> None:
        kinds, weights = zip(*KILLS, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "worker process":
            service = self.rng.choice(SERVICES)
            pid = self.stack.sigkill_worker(service, self.rng.choice)
            what = f"SIGKILL a gunicorn worker of {service} (pid {pid})"
        elif kind == "service":
            service = self.rng.choice(SERVICES)
            pid = self.stack.sigkill(service)
            what = f"SIGKILL all of {service} (group {pid})"
        else:
            program = "orders-worker" if kind == "task worker" else "inventory-sweeper"
            pid = self.stack.sigkill(program)
            what = f"SIGKILL {program} (pid {pid})"
        if pid is not None:
            self.kills += 1
            self._log(what)
        else:
            self._log(f"(no victim: {what} found nothing running)")

    # -- the worst moments -------------------------------------------------------------------------

    def _wait_for(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self._halt.is_set():
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def kill_the_worker_mid_task(self) -> None:
        self.stack.inject("payments", {"hang": True, "match": CHARGES})
        self._log("payments: hang on charges (to catch the task worker inside a task)")
        try:
            from django_tasks_db.models import DBTaskResult

            table = DBTaskResult._meta.db_table
            running = lambda: self.stack.query(  # noqa: E731
                "orders", f"SELECT id FROM {table} WHERE status = 'RUNNING'"
            )
            if self._wait_for(running, timeout=15.0):
                pid = self.stack.sigkill("orders-worker")
                if pid is not None:
                    self.kills += 1
                    self.worker_kills_mid_task += 1
                    self._log(f"SIGKILL orders-worker while it ran a task (pid {pid})")
            else:
                self._log("(no task ran within 15 s: the worker was not killed mid-task)")
        finally:
            self.stack.lift("payments")
            self._log("payments: fault lifted")

    def kill_payments_after_a_charge(self) -> None:
        (before,) = self.stack.query(
            "payments", "SELECT COALESCE(MAX(id), 0) FROM payments_charge"
        )[0]
        self.stack.inject("payments", {"delay_response_ms": 3000, "match": CHARGES})
        self._log("payments: charges answered 3 s late")
        charged = lambda: self.stack.query(  # noqa: E731
            "payments", "SELECT id FROM payments_charge WHERE id > ?", (before,)
        )
        if self._wait_for(charged, timeout=15.0):
            pid = self.stack.sigkill("payments")
            if pid is not None:
                self.kills += 1
                self.payments_kills_after_charge += 1
                self._log(f"SIGKILL all of payments after it charged, before it answered ({pid})")
        else:
            self._log("(no charge within 15 s: payments was not killed after a charge)")
        self._wait_for(lambda: self.stack.healthy("payments"), timeout=30.0)
        self.stack.lift("payments")
        self._log("payments: fault lifted")
