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

With ``pausing``, a third of the random strikes pause instead of kill: SIGSTOP the victim
(a gunicorn worker, a whole service, a task worker, the sweeper), then SIGCONT it after longer
than the lease it holds (``pause_seconds``): its placing lease, its charge's in-flight lease,
its send lease, its heartbeat's dead-after. A paused process is alive to every probe that only
asks whether it exists; it wakes up late, sure of what it held. And a third worst moment:

- a task worker paused while it runs a task (payments hangs on charges again; the moment a
  task is RUNNING, the worker running it is SIGSTOPped and the hang lifted; once its heartbeat
  is older than ``ORDERS_WORKER_DEAD_AFTER`` the other worker's reconciler reaps the task and
  queues the order again; then the paused worker is resumed, in the middle of its old pass).

Whatever happens (an error, the end of the load, Ctrl-C), everything paused is resumed:
``stop`` resumes what the nemesis paused, ``RunningStack.recover`` anything left.

The same seed gives the same choices in the same order (the moments depend on the load).
"""

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resilience.conf import build_config
from workshop.scenarios.stack import SERVICES, RunningStack

CHARGES = {"path_prefix": "/api/charges/"}
# Weights of the random kills, and of the random pauses.
KILLS = (("worker process", 4), ("service", 3), ("task worker", 2), ("sweeper", 1))
PAUSES = KILLS
PAUSE_SHARE = 1 / 3  # of the random strikes, with pausing
# The lease each victim holds, by the setting that bounds it: a pause lasts longer than that.
# (None: it holds no lease; its pause is still longer than its callers' patience.)
LEASES = {
    "orders": ("ORDERS_SAFETY_NET_DELAY",),  # placing an order: its request's lease
    "payments": ("PAYMENTS_IN_FLIGHT_LEASE",),  # a charge in flight under its key
    "notifications": ("NOTIFICATIONS_SEND_LEASE",),  # an e-mail being sent
    "task worker": ("ORDERS_WORKER_DEAD_AFTER", "ORDERS_RECONCILE_INTERVAL"),  # its heartbeat
    "sweeper": ("SEAT_HOLD_SWEEP_EVERY",),  # no lease: a sweep missed
    "gateway": (),
    "inventory": (),
    "recommendations": (),
}
LEASELESS_PAUSE = 4.0  # seconds: above the callers' timeouts into these services (1-3 s)


def lease_seconds(stack: RunningStack, victim: str) -> float:
    """The lease ``victim`` holds on ``stack`` (the sum of its settings), in seconds."""
    from django.conf import settings

    total = 0.0
    for name in LEASES[victim]:
        default = getattr(settings, name, 30)  # SEAT_HOLD_SWEEP_EVERY: workshop/stack.py's 30
        total += float(stack.env.get(name) or default)
    return total


def worker_pid(worker_ids) -> int | None:
    """The pid in a task row's last worker id (``host:pid:random``, orders.reconciler)."""
    if isinstance(worker_ids, str):
        worker_ids = json.loads(worker_ids or "[]")
    if not worker_ids:
        return None
    pid = worker_ids[-1].split(":")[1]
    return int(pid) if pid.isdigit() else None


@dataclass
class Nemesis:
    stack: RunningStack
    seed: int
    clock: Callable[[], float]  # seconds since the load started
    until: float  # stop choosing victims after this many seconds of load
    out: Callable[[str], None] = lambda line: None
    pausing: bool = False  # pause processes past their leases too (SIGSTOP, then SIGCONT)
    worst_moments_at: tuple[float, ...] = (8.0, 25.0, 36.0)
    events: list[tuple[float, str]] = field(default_factory=list)
    kills: int = 0
    pauses: int = 0
    worker_kills_mid_task: int = 0
    worker_pauses_mid_task: int = 0
    worker_pauses_reaped: int = 0  # of those, the task reaped and the order queued meanwhile
    payments_kills_after_charge: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._timers: list[threading.Timer] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=90)
        for timer in self._timers:
            timer.cancel()
        for what in self.stack.resume_all():
            self._log(f"SIGCONT {what} (the nemesis stopped)")

    def as_dict(self) -> dict:
        return {
            "seed": self.seed,
            "pausing": self.pausing,
            "kills": self.kills,
            "pauses": self.pauses,
            "worker_kills_mid_task": self.worker_kills_mid_task,
            "worker_pauses_mid_task": self.worker_pauses_mid_task,
            "worker_pauses_reaped": self.worker_pauses_reaped,
            "payments_kills_after_charge": self.payments_kills_after_charge,
        }

    def _log(self, what: str) -> None:
        at = round(self.clock(), 2)
        self.events.append((at, what))
        self.out(f"[nemesis] {at:5.1f} s  {what}")

    # -- the schedule ------------------------------------------------------------------------------

    def _run(self) -> None:
        worst = [self.kill_the_worker_mid_task, self.kill_payments_after_a_charge]
        if self.pausing:
            worst.append(self.pause_the_worker_mid_task)
        moments = list(zip(self.worst_moments_at, worst, strict=False))  # 2 or 3 of them
        while not self._halt.is_set() and self.clock() < self.until:
            if self._halt.wait(self.rng.uniform(1.0, 3.0)):
                return
            try:
                if moments and self.clock() >= moments[0][0]:
                    if self.stack.paused:  # the moment needs every service answering: until
                        self.kill_at_random()  # the pauses end, kills only (no new pause)
                    else:
                        moments.pop(0)[1]()
                elif self.pausing and self.rng.random() < PAUSE_SHARE:
                    self.pause_at_random()
                else:
                    self.kill_at_random()
            except Exception as exc:  # a victim that was already dead, a stack restarting
                self._log(f"(missed: {type(exc).__name__}: {exc})")

    def _task_worker(self) -> str:
        workers = self.stack.task_workers()
        # One worker: no draw, so that a seed's choices stay those it made before pausing.
        return self.rng.choice(workers) if len(workers) > 1 else workers[0]

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
            program = self._task_worker() if kind == "task worker" else "inventory-sweeper"
            pid = self.stack.sigkill(program)
            what = f"SIGKILL {program} (pid {pid})"
        if pid is not None:
            self.kills += 1
            self._log(what)
        else:
            self._log(f"(no victim: {what} found nothing running)")

    def pause_at_random(self) -> None:
        kinds, weights = zip(*PAUSES, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "worker process":
            victim = self.rng.choice(SERVICES)
            pid = self.stack.pause_worker(victim, self.rng.choice)
            what = f"a gunicorn worker of {victim} (pid {pid})"
        elif kind == "service":
            victim = self.rng.choice(SERVICES)
            pid = self.stack.pause(victim)
            what = f"all of {victim} (group {pid})"
        else:
            victim = kind
            program = self._task_worker() if kind == "task worker" else "inventory-sweeper"
            pid = self.stack.pause(program)
            what = f"{program} (pid {pid})"
        if pid is None:
            self._log(f"(no victim: SIGSTOP {what} found nothing running, or it was paused)")
            return
        lease = lease_seconds(self.stack, victim)
        seconds = (lease or LEASELESS_PAUSE) + self.rng.uniform(1.0, 3.0)
        self.pauses += 1
        held = f"past its {lease:g} s lease" if lease else "(it holds no lease)"
        self._log(f"SIGSTOP {what} for {seconds:.1f} s, {held}")
        timer = threading.Timer(seconds, self._resume, args=(pid, what, seconds))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _resume(self, pid: int, what: str, seconds: float) -> None:
        if self.stack.resume(pid):
            self._log(f"SIGCONT {what} after {seconds:.1f} s")
        else:
            self._log(f"(SIGCONT {what}: gone meanwhile, killed)")

    # -- the worst moments -------------------------------------------------------------------------

    def _wait_for(self, predicate, timeout: float, *, through_halt: bool = False):
        """The predicate's first true value within ``timeout`` (None: not, or halted, unless
        ``through_halt``: a pause already begun runs its course when the load ends).

        A SQLite database locked by a process paused inside a commit is "not yet": every writer
        of that service waits for it too. (Raised, it ended a pause mid-task after the 5 s busy
        timeout, short of an 8 s lease, and the pause was counted as past its lease.)"""
        end = time.monotonic() + timeout
        while time.monotonic() < end and (through_halt or not self._halt.is_set()):
            try:
                value = predicate()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.05)
        return None

    def kill_the_worker_mid_task(self) -> None:
        try:
            self.stack.inject("payments", {"hang": True, "match": CHARGES})
            self._log("payments: hang on charges (to catch the task worker inside a task)")
            running = self._wait_for(self._running_task, timeout=15.0)
            if running:
                program = running[2]
                pid = self.stack.sigkill(program)
                if pid is not None:
                    self.kills += 1
                    self.worker_kills_mid_task += 1
                    self._log(f"SIGKILL {program} while it ran a task (pid {pid})")
            else:
                self._log("(no task ran within 15 s: the worker was not killed mid-task)")
        finally:
            self.stack.lift("payments")
            self._log("payments: fault lifted")

    def _running_task(self) -> tuple[str, str, str] | None:
        """(task id, its order, the program of the live task worker running it), or None."""
        from django_tasks_db.models import DBTaskResult

        table = DBTaskResult._meta.db_table
        rows = self.stack.query(
            "orders", f"SELECT id, worker_ids, args_kwargs FROM {table} WHERE status = 'RUNNING'"
        )
        for task, worker_ids, args_kwargs in rows:
            pid = worker_pid(worker_ids)
            program = self.stack.program_of(pid) if pid else None
            if program and -pid not in self.stack.paused:
                if isinstance(args_kwargs, str):
                    args_kwargs = json.loads(args_kwargs)
                return str(task), (args_kwargs.get("args") or [""])[0], program
        return None

    def pause_the_worker_mid_task(self) -> None:
        """SIGSTOP the task worker running a task, lift the hang, wait until the reaper (of
        another worker) failed its task and a new one runs the order, then SIGCONT it."""
        from django_tasks_db.models import DBTaskResult

        table = DBTaskResult._meta.db_table
        paused = None
        try:
            self.stack.inject("payments", {"hang": True, "match": CHARGES})
            self._log("payments: hang on charges (to catch a task worker inside a task)")
            running = self._wait_for(self._running_task, timeout=15.0)
            if running:
                task, order, program = running
                pid = self.stack.pause(program)
                if pid is not None:
                    paused = (task, order, program, pid, time.monotonic())
                    self.pauses += 1
                    self._log(f"SIGSTOP {program} while it ran a task (pid {pid})")
            else:
                self._log("(no task ran within 15 s: no worker was paused mid-task)")
        finally:
            self.stack.lift("payments")
            self._log("payments: fault lifted")
        if paused is None:
            return
        task, order, program, pid, since = paused
        lease = lease_seconds(self.stack, "task worker")

        def reaped_or_stuck():
            try:
                rows = self.stack.query(
                    "orders", f"SELECT status FROM {table} WHERE id = ?", (task,)
                )
            except sqlite3.OperationalError as exc:
                # SQLite, paused inside a commit: nobody can reap while it holds the lock, so
                # the pause ends once it is past the lease.
                if "locked" not in str(exc):
                    raise
                return "stuck" if time.monotonic() - since > lease + 1.0 else None
            return rows[0][0] != "RUNNING"

        # Once begun, the pause runs past its lease even if the load ends meanwhile: cut short
        # at the end of the run (a moment that came late, after a long wait for a charge), it
        # was neither past its lease nor reaped, and the run failed its schedule check.
        try:
            reaped = self._wait_for(reaped_or_stuck, timeout=lease + 20.0, through_halt=True)
            if reaped == "stuck":
                reaped = False
                self._log(f"{program} holds the orders database's lock: nobody can reap")
            # Taken: a newer task of the same order is running or done (another pass).
            taken = reaped and self._wait_for(
                lambda: any(
                    order in str(args)
                    for (args,) in self.stack.query(
                        "orders",
                        f"SELECT args_kwargs FROM {table} WHERE id != ? AND enqueued_at > "
                        f"(SELECT enqueued_at FROM {table} WHERE id = ?)",
                        (task, task),
                    )
                ),
                timeout=3.0,  # the reconciler queues it right after the reap, if at all
                through_halt=True,
            )
            left = lease + 1.0 - (time.monotonic() - since)
            if left > 0:  # past its lease in any case, reaped or not (a lone worker is not)
                time.sleep(left)
        finally:
            resumed = self.stack.resume(pid)
        took = time.monotonic() - since
        if took >= lease:  # counted only past its lease (the end of the run may come first)
            self.worker_pauses_mid_task += 1
            if reaped:
                self.worker_pauses_reaped += 1
        self._log(
            f"SIGCONT {program} after {took:.1f} s"
            + (" (gone meanwhile)" if not resumed else "")
            + f": its task {'reaped' if reaped else 'NOT reaped'}"
            + (", the order queued again" if taken else "")
        )

    def kill_payments_after_a_charge(self) -> None:
        (before,) = self.stack.query(
            "payments", "SELECT COALESCE(MAX(id), 0) FROM payments_charge"
        )[0]
        try:
            self.stack.inject("payments", {"delay_response_ms": 3000, "match": CHARGES})
            self._log("payments: charges answered 3 s late")
            charged = lambda: self.stack.query(  # noqa: E731
                "payments", "SELECT id FROM payments_charge WHERE id > ?", (before,)
            )
            # No charge comes while orders' payments breaker is open (a pause of payments just
            # before opens it): wait out its open state, then a trial call's charge is the one.
            wait = build_config("payments").circuit_breaker.wait_duration_in_open_state + 10.0
            # Through the end of the load too, as a pause mid-task runs its course: the task
            # worker still settles orders, and a short run (lab 8: 30 s, the moment at 25 s)
            # ended the wait before an open breaker had let a charge through.
            if self._wait_for(charged, timeout=wait, through_halt=True):
                pid = self.stack.sigkill("payments")
                if pid is not None:
                    self.kills += 1
                    self.payments_kills_after_charge += 1
                    self._log(
                        f"SIGKILL all of payments after it charged, before it answered ({pid})"
                    )
            else:
                self._log(f"(no charge within {wait:g} s: payments was not killed after a charge)")
            self._wait_for(lambda: self.stack.healthy("payments"), timeout=30.0)
        finally:
            self.stack.lift("payments")
            self._log("payments: fault lifted")
