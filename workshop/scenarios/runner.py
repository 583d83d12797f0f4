"""Run a scenario on a real stack: load, fault, recovery, drain, audit.

One run, step by step:

1. a fresh stack (or the one given), with resilience on or off everywhere;
2. a few warm-up requests (so that the gateway's recommendations cache has seen some shows);
3. the bounded load starts; the scenario's steps inject faults at their times, through the
   chaos API or by stopping a service; a poller reads the watched breakers' state twice a
   second from /metrics;
4. the load ends by itself; every fault is lifted; the run waits (bounded) for every order it
   placed to settle and for the watched breakers to close;
5. every service's ledger is read, until two reads in a row agree, and audited
   (``workshop.scenarios.audit``): double charges, lost orders, unsettled orders, oversold
   seats, emails not sent exactly once, wrong amounts, payments left in flight, parked orders;
   the policies' counters are read as deltas.
"""

import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from workshop.scenarios.audit import (  # noqa: F401 (lost, seats_unmatched: imported from here)
    UNSETTLED_BOUND,
    audit,
    lost,
    read_consistent,
    seats_unmatched,
)
from workshop.scenarios.load import ENDPOINTS, ERROR, NO_ANSWER, OK, Load, Profile, Sample, tally
from workshop.scenarios.nemesis import Nemesis
from workshop.scenarios.stack import RunningStack

POLL_INTERVAL = 0.5
SEVERITY = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the load starts
    label: str
    action: Callable[[RunningStack], None]
    lifts: bool = False  # this step ends the fault: recovery is timed from here


@dataclass(frozen=True)
class Check:
    description: str
    passed: bool
    measured: str


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    profile: Profile
    steps: tuple[Step, ...]
    watch: tuple[tuple[str, str], ...] = (("orders", "payments"),)  # (service, breaker)
    drain_timeout: float = 90.0
    checks: Callable[["RunResult"], list[Check]] = lambda result: []
    shows: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    nemesis: bool = False  # a seeded Chaos Monkey SIGKILLs processes while the load runs
    env: dict[str, str] = field(default_factory=dict)  # settings of this scenario's stack


@dataclass
class RunResult:
    scenario: str
    resilience: bool
    profile: Profile
    samples: list[Sample]
    events: list[tuple[float, str]]  # (seconds after the load started, what happened)
    breakers: list[tuple[float, str, str]]  # (seconds, "service/breaker", state)
    policies: dict[str, dict[str, dict]]  # service -> policy -> counters (deltas of the run)
    audit: dict[str, list]
    drain_seconds: float | None  # after the faults were lifted; None if it did not drain
    recovery: dict[str, float | None] = field(default_factory=dict)
    probes: int = 0  # orders sent after the load, while waiting for the breakers to close
    drain_notes: list[str] = field(default_factory=list)  # breakers not waited for, and why
    checks: list[Check] = field(default_factory=list)
    nemesis: dict = field(default_factory=dict)  # seed, kills, worst moments hit

    # -- what the user saw -----------------------------------------------------------------------

    def of(self, endpoint: str) -> list[Sample]:
        return [s for s in self.samples if s.endpoint == endpoint]

    def endpoints(self) -> dict[str, dict]:
        duration = max(self.profile.duration, max((s.at for s in self.samples), default=0))
        table = {}
        for endpoint in ENDPOINTS:
            samples = self.of(endpoint)
            if not samples:
                continue
            latencies = sorted(s.latency for s in samples)
            table[endpoint] = {
                "requests": len(samples),
                "throughput": len(samples) / duration if duration else 0.0,
                "success": sum(s.outcome not in (NO_ANSWER, ERROR) for s in samples) / len(samples),
                "ok": sum(s.outcome == OK for s in samples),
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "outcomes": dict(tally(samples)),
            }
        return table

    # -- what the policies did -------------------------------------------------------------------

    def total(self, counter: str, service: str | None = None, policy: str | None = None) -> float:
        return sum(
            counters.get(counter, 0)
            for svc, by_policy in self.policies.items()
            if service in (None, svc)
            for name, counters in by_policy.items()
            if policy in (None, name)
        )

    def transitions(self) -> dict[str, int]:
        found: Counter = Counter()
        for service, by_policy in self.policies.items():
            for name, counters in by_policy.items():
                for transition, count in counters.get("transitions", {}).items():
                    found[f"{service}->{name} {transition}"] += count
        return dict(found)

    def ever(self, breaker: str, state: str) -> bool:
        return any(b == breaker and s == state for _, b, s in self.breakers)

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "resilience": self.resilience,
            "profile": self.profile.__dict__,
            "endpoints": self.endpoints(),
            "events": self.events,
            "breakers": self.breakers,
            "policies": self.policies,
            "audit": self.audit,
            "drain_seconds": self.drain_seconds,
            "recovery": self.recovery,
            "probes": self.probes,
            "drain_notes": self.drain_notes,
            "checks": [check.__dict__ for check in self.checks],
            "nemesis": self.nemesis,
            "samples": [sample.as_dict() for sample in self.samples],
        }


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(rank) - 1]


# -- the policies' counters --------------------------------------------------------------------


def policy_counters(stack: RunningStack, service: str) -> dict[str, dict]:
    """policy -> its counters on ``service`` now (summed over the service's worker processes)."""
    found: dict[str, dict] = defaultdict(lambda: {"transitions": {}})
    for name, labels, value in stack.metrics(service):
        policy = labels.get("name")
        if not policy or not name.startswith("resilience_"):
            continue
        counters = found[policy]
        kind = labels.get("kind")
        if name == "resilience_retry_calls_total":
            counters[f"retry_{kind}"] = value
        elif name == "resilience_retry_attempts_total":
            counters["retries"] = value
        elif name == "resilience_retry_budget_exhausted_total":
            counters["retry_budget_exhausted"] = value
        elif name == "resilience_circuitbreaker_calls_total":
            counters[f"breaker_{kind}"] = value
        elif name == "resilience_bulkhead_calls_total":
            counters[f"bulkhead_{kind}"] = value
        elif name == "resilience_timeout_calls_total":
            counters[f"timeout_{kind}"] = value
        elif name == "resilience_fallback_calls_total":
            counters["fallbacks"] = counters.get("fallbacks", 0) + value
        elif name == "resilience_circuitbreaker_transitions_total":
            key = f"{labels['from_state']}->{labels['to_state']}"
            counters["transitions"][key] = value
    return dict(found)


def counter_deltas(before: dict, after: dict) -> dict:
    deltas = {}
    for policy, counters in after.items():
        old = before.get(policy, {})
        row = {}
        for key, value in counters.items():
            if key == "transitions":
                moved = {
                    t: n - old.get("transitions", {}).get(t, 0)
                    for t, n in value.items()
                    if n - old.get("transitions", {}).get(t, 0)
                }
                row["transitions"] = moved
            else:
                row[key] = value - old.get(key, 0)
        deltas[policy] = row
    return deltas


def breaker_states(stack: RunningStack, service: str) -> dict[str, str]:
    """breaker -> the worst state any live worker of ``service`` sees it in, from one read
    of its /metrics ({} if it did not answer)."""
    worst: dict[str, str] = {}
    for name, labels, value in stack.metrics(service):
        if name == "resilience_circuitbreaker_process_state" and value:
            breaker, state = labels["name"], labels["state"]
            if SEVERITY[state] >= SEVERITY[worst.get(breaker, "closed")]:
                worst[breaker] = state
    return worst


# -- one run -----------------------------------------------------------------------------------


class _Poller(threading.Thread):
    """Reads the watched breakers' states every POLL_INTERVAL seconds until stopped."""

    def __init__(self, stack: RunningStack, watch, clock: Callable[[], float]) -> None:
        super().__init__(daemon=True)
        self.stack, self.watch, self.clock = stack, watch, clock
        self.seen: list[tuple[float, str, str]] = []
        self.halt = threading.Event()

    def state(self, key: str) -> str | None:
        states = [s for _, b, s in self.seen if b == key]
        return states[-1] if states else None

    def run(self) -> None:
        while not self.halt.is_set():
            states = {service: breaker_states(self.stack, service) for service, _ in self.watch}
            for service, breaker in self.watch:
                state = states[service].get(breaker)
                key = f"{service}/{breaker}"
                if state and state != self.state(key):
                    self.seen.append((round(self.clock(), 2), key, state))
            self.halt.wait(POLL_INTERVAL)


def run(
    scenario: Scenario,
    *,
    resilience: bool = True,
    stack: RunningStack | None = None,
    out: Callable[[str], None] = lambda line: None,
    seed: int = 1,
    pauses: bool = False,
    workers: int | None = None,
) -> RunResult:
    """One run of ``scenario``; ``seed`` and ``pauses`` are the nemesis's (chaos-monkey),
    ``workers`` the task workers of the fresh stack (``ORDERS_TASK_WORKERS``)."""
    own = stack is None
    if own:
        directory = Path(tempfile.mkdtemp(prefix=f"scenario-{scenario.name}-"))
        env = dict(scenario.env)
        if workers is not None:
            env["ORDERS_TASK_WORKERS"] = str(workers)
        stack = RunningStack(directory, resilience=resilience, env=env)
        out(f"[{label(resilience)}] starting a fresh stack in {directory} ...")
        stack.up()
    elif stack.resilience != resilience:
        raise ValueError(f"the stack given runs {label(stack.resilience)}")
    elif workers is not None and len(stack.task_workers()) != workers:
        raise ValueError(f"the stack given runs {len(stack.task_workers())} task worker(s)")
    keep = True  # the stack's directory (its logs) is kept when the run broke or a check failed
    try:
        result = _run(scenario, stack, out, seed, pauses)
        keep = bool(result.failed_checks)
        return result
    except BaseException:
        if not own:  # a shared stack must not keep this run's faults (Ctrl-C, a failed step)
            stack.recover()
        raise
    finally:
        if own:
            out(f"[{label(resilience)}] stopping the stack ...")
            stack.down()
            if keep:
                out(f"[{label(resilience)}] its logs are kept in {stack.var_dir / 'log'}")
            else:
                shutil.rmtree(stack.var_dir, ignore_errors=True)


def label(resilience: bool) -> str:
    return "with resilience" if resilience else "without resilience"


def _run(scenario: Scenario, stack: RunningStack, out, seed: int, pauses: bool) -> RunResult:
    tag = f"[{label(stack.resilience)}]"
    gateway = stack.urls["gateway"]
    for show in scenario.shows[:3]:  # warm up: the cache has seen these shows
        requests.get(f"{gateway}/api/shows/{show}/recommendations/", timeout=5)
    at_start, _ = read_consistent(stack.ledger)  # a live stack's earlier orders and damage
    before_orders = {o["id"] for o in at_start["orders"]["orders"]}
    services = sorted({"gateway", "orders", *(service for service, _ in scenario.watch)})
    before = {service: policy_counters(stack, service) for service in services}

    load = Load(gateway, scenario.profile, list(scenario.shows))
    events: list[tuple[float, str]] = []
    poller = _Poller(stack, scenario.watch, load.elapsed)
    out(f"{tag} load: {scenario.profile.describe()}")
    lifted = None
    steps = sorted(scenario.steps, key=lambda s: s.at)
    for step in [s for s in steps if s.at <= 0]:  # in place before the first request
        step.action(stack)
    nemesis = None
    if scenario.nemesis:
        nemesis = Nemesis(
            stack, seed, load.elapsed, until=scenario.profile.duration, out=out, pausing=pauses
        )
        out(
            f"{tag} nemesis: seed {seed}, SIGKILLs{' and pauses' if pauses else ''} until "
            f"{scenario.profile.duration:g} s; task workers: {', '.join(stack.task_workers())}"
        )
    load.start()
    poller.start()
    if nemesis is not None:
        nemesis.start()
    try:
        for step in steps:
            if step.at <= 0:
                events.append((0.0, step.label))
                out(f"{tag}   0.0 s  {step.label}")
                continue
            time.sleep(max(0.0, step.at - load.elapsed()))
            step.action(stack)
            events.append((round(load.elapsed(), 2), step.label))
            if step.lifts and lifted is None:
                lifted = load.elapsed()
            out(f"{tag} {load.elapsed():5.1f} s  {step.label}")
        samples = load.join()
        out(f"{tag} {load.elapsed():5.1f} s  load finished: {len(samples)} requests")
    finally:  # a failed step or Ctrl-C too: the nemesis resumes what it paused, and stops
        if nemesis is not None:
            nemesis.stop()
            events.extend(nemesis.events)
    for line in stack.recover():  # every fault lifted, every stopped service started
        out(f"{tag} {load.elapsed():5.1f} s  {line}")
    if nemesis is not None:  # supervisor restarts what was killed; wait until it has
        stack.wait_for(lambda: not stack.all_running(), timeout=60)
        stack.wait_for(lambda: all(stack.healthy(s) for s in stack.urls), timeout=60)
    events.append((round(load.elapsed(), 2), "every fault lifted"))
    if lifted is None:
        lifted = load.elapsed()
    out(f"{tag} {load.elapsed():5.1f} s  every fault lifted; waiting for queued work to drain ...")

    drain = _drain(stack, before_orders, scenario, poller, lifted, load.elapsed, out=out)
    out(
        f"{tag} {load.elapsed():5.1f} s  "
        + (f"drained in {drain.seconds:.1f} s" if drain.seconds is not None else "did NOT drain")
    )
    poller.halt.set()
    poller.join(timeout=5)

    after = {service: policy_counters(stack, service) for service in services}
    ledger, reads = read_consistent(stack.ledger)
    out(
        f"{tag} ledgers read {'alike twice in a row' if reads else 'NEVER alike twice in a row'}"
        f" ({reads or 'all'} reads)"
    )
    run_orders = {o["id"] for o in ledger["orders"]["orders"]} - before_orders
    answered = {s.order_id for s in samples if s.order_id}
    result = RunResult(
        scenario=scenario.name,
        resilience=stack.resilience,
        profile=scenario.profile,
        samples=samples,
        events=events,
        breakers=poller.seen,
        policies={s: counter_deltas(before[s], after[s]) for s in services},
        audit=audit(ledger, run_orders, answered, before=at_start, late=drain.late, reads=reads),
        drain_seconds=drain.seconds,
        recovery=_recovery(poller.seen, lifted, scenario.watch),
        probes=drain.probes,
        drain_notes=drain.notes,
    )
    if nemesis is not None:
        result.nemesis = nemesis.as_dict()
    if stack.resilience:
        result.checks = scenario.checks(result)
    return result


@dataclass
class Drain:
    seconds: float | None  # after the faults were lifted; None if it did not drain
    probes: int  # orders sent meanwhile
    late: list[str]  # orders still unsettled UNSETTLED_BOUND seconds after the faults
    notes: list[str]  # breakers not waited for, and why


# Breakers that only a call after a successful hold reaches: no probe reaches them once every
# show is sold out (a sold-out probe ends at inventory).
AFTER_A_HOLD = ("payments", "notifications")


def beyond_reach(opened: list[str], shows_left: list[int]) -> list[str]:
    """The breakers among ``opened`` ("service/breaker") that no probe order can reach: those
    called after a hold, when no show has a seat left to hold."""
    if shows_left:
        return []
    return [key for key in opened if key.split("/")[1] in AFTER_A_HOLD]


def shows_with_seats(stack: RunningStack, shows) -> list[int]:
    """The shows among ``shows`` with a seat left, read from inventory's own table."""
    rows = stack.query(
        "inventory", "SELECT id FROM inventory_show WHERE seats_total - seats_held - seats_sold > 0"
    )
    left = {row[0] for row in rows}
    return [show for show in shows if show in left]


def _drain(stack, before_orders, scenario, poller, lifted, clock, out=lambda line: None) -> Drain:
    """Wait (bounded) until every order of the run settled and the watched breakers closed."""
    deadline = time.monotonic() + scenario.drain_timeout
    drain = Drain(seconds=None, probes=0, late=[], notes=[])
    late = None

    def unsettled() -> list[str]:
        orders = stack.ledger(("orders",))["orders"]["orders"]
        return [o["id"] for o in orders if o["id"] not in before_orders and not o["settled"]]

    unreachable: set[str] = set()

    def still_open() -> list[str]:
        return [
            f"{service}/{breaker}"
            for service, breaker in scenario.watch
            if poller.state(f"{service}/{breaker}") not in (None, "closed")
            and f"{service}/{breaker}" not in unreachable
        ]

    # A breaker leaves open only when a call comes after its wait: as in production, traffic
    # goes on after the fault, here a browse and an order a second until the breakers closed,
    # on a show with seats left (an order for a sold-out show never reaches payments).
    probe = Load(
        stack.urls["gateway"], Profile(duration=scenario.drain_timeout), list(scenario.shows)
    )
    while time.monotonic() < deadline:
        waiting = unsettled()
        if late is None and clock() - lifted >= UNSETTLED_BOUND:
            late = drain.late = waiting
        opened = still_open()
        if opened:
            shows = shows_with_seats(stack, scenario.shows)
            for key in beyond_reach(opened, shows):
                unreachable.add(key)
                note = (
                    f"{key} left {poller.state(key)}: every show is sold out, so no probe "
                    "order can reach it; not waiting for it"
                )
                drain.notes.append(note)
                out(f"[drain] {note}")
            probe.browse()
            show = (shows or list(scenario.shows))[drain.probes % len(shows or scenario.shows)]
            probe.buy(show, email=f"probe{drain.probes}@example.com")
            drain.probes += 1
        elif not waiting:
            drain.seconds = round(clock() - lifted, 2)
            return drain
        time.sleep(1.0)
    if late is None:  # the drain gave up before the bound: unsettled at its end
        drain.late = unsettled()
    return drain


def _recovery(seen, lifted: float, watch) -> dict[str, float | None]:
    """Per watched breaker that was not closed when the fault was lifted: seconds until it
    closed again (None if it never did). Breakers that stayed closed are left out."""
    recovery = {}
    for service, breaker in watch:
        key = f"{service}/{breaker}"
        history = [(t, s) for t, b, s in seen if b == key]
        state_at_lift = next((s for t, s in reversed(history) if t <= lifted), "closed")
        if state_at_lift == "closed":
            continue
        closed_at = [t for t, s in history if t > lifted and s == "closed"]
        recovery[key] = round(closed_at[0] - lifted, 2) if closed_at else None
    return recovery
