"""Run a scenario on a real stack: load, fault, recovery, drain, audit.

One run, step by step:

1. a fresh stack (or the one given), with resilience on or off everywhere;
2. a few warm-up requests (so that the gateway's recommendations cache has seen some shows);
3. the bounded load starts; the scenario's steps inject faults at their times, through the
   chaos API or by stopping a service; a poller reads the watched breakers' state twice a
   second from /metrics;
4. the load ends by itself; every fault is lifted; the run waits (bounded) for every order it
   placed to settle and for the watched breakers to close;
5. every service's ledger is read and audited: double charges, lost orders, unsettled orders,
   oversold seats, emails not sent exactly once; the policies' counters are read as deltas.
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


# -- the audit ---------------------------------------------------------------------------------


def seats_unmatched(ledger: dict) -> dict[int, int]:
    """Show -> seats sold minus the seats of the orders that have them (0: they match)."""
    holds = {h["order_id"]: h for h in ledger["inventory"]["holds"]}
    # Seats sold belong to confirmed orders, and to paid ones whose seats were just sold (the
    # step between is the worker's: on a live stack, an order from before the run may be
    # there as the ledger is read; an order of the run left there fails paid_not_confirmed).
    owned: Counter = Counter()
    for order in ledger["orders"]["orders"]:
        selling = order["status"] == "paid" and holds.get(order["id"], {}).get("status") == (
            "confirmed"
        )
        if order["status"] == "confirmed" or selling:
            owned[order["show_id"]] += order["quantity"]
    return {s["id"]: s["seats_sold"] - owned[s["id"]] for s in ledger["inventory"]["shows"]}


def audit(
    ledger: dict, run_orders: set[str], answered: set[str], before: dict | None = None
) -> dict[str, list]:
    """What the data left behind says about this run's orders (and every show's seats: with
    ``before``, the ledger at the start, only what changed since, so that a live stack's
    earlier damage is not blamed on this run)."""
    orders = {o["id"]: o for o in ledger["orders"]["orders"] if o["id"] in run_orders}
    kept: Counter = Counter(  # charges that succeeded and were not given back
        c["order_id"]
        for c in ledger["payments"]
        if c["status"] == "succeeded" and not c["refunded"]
    )
    charged: Counter = Counter(
        c["order_id"] for c in ledger["payments"] if c["status"] == "succeeded"
    )
    holds = {h["order_id"]: h for h in ledger["inventory"]["holds"]}
    every_order = {o["id"]: o for o in ledger["orders"]["orders"]}
    notifications = ledger["notifications"]
    mail = notifications["mail"]
    if mail is None:  # a mail backend that keeps nothing to count: the rows, sent
        mail = [
            {"order_id": n["order_id"], "kind": n["kind"]}
            for n in notifications["rows"]
            if n["status"] == "sent"
        ]
    sent: Counter = Counter((m["order_id"], m["kind"]) for m in mail)
    unmatched = seats_unmatched(ledger)
    if before is not None:
        was = seats_unmatched(before)
        unmatched = {show: n for show, n in unmatched.items() if n != was.get(show, 0)}
    final = ("confirmed", "failed")
    return {
        "orders": sorted(orders),
        "double_charged": sorted(o for o in orders if charged[o] > 1),
        "paid_not_confirmed": sorted(
            o for o in orders if kept[o] and orders[o]["status"] != "confirmed"
        ),
        "paid_without_seats": sorted(
            o for o in orders if kept[o] and holds.get(o, {}).get("status") != "confirmed"
        ),
        "failed_but_charged": sorted(
            o for o in orders if kept[o] and orders[o]["status"] == "failed"
        ),
        "confirmed_not_paid": sorted(
            o for o in orders if orders[o]["status"] == "confirmed" and not kept[o]
        ),
        "answered_but_missing": sorted(answered - set(orders)),
        "unsettled": sorted(o for o in orders if not orders[o]["settled"]),
        "stuck": sorted(set(ledger["orders"]["stuck"]) & set(orders)),
        "orphaned_running_tasks": ledger["orders"]["orphaned_running_tasks"],
        "orphaned_holds": sorted(
            order_id
            for order_id, hold in holds.items()
            if hold["status"] == "held"
            and every_order.get(order_id, {}).get("status", "failed") in final
        ),
        "oversold_shows": [
            s["id"]
            for s in ledger["inventory"]["shows"]
            if s["seats_sold"] + s["seats_held"] > s["seats_total"]
        ],
        "seats_not_matching_orders": sorted(show for show, n in unmatched.items() if n),
        "emails_not_exactly_once": sorted(
            o
            for o in orders
            if orders[o]["status"] == "confirmed" and sent[(o, "order_confirmed")] != 1
        ),
        "refund_notices_not_once": sorted(
            o for o in orders if orders[o]["refunded"] and sent[(o, "order_refunded")] != 1
        ),
    }


def lost(audit_: dict) -> list[str]:
    """Orders a user paid for or was told about that did not end as they should."""
    return sorted(set(audit_["answered_but_missing"]) | set(audit_["paid_not_confirmed"]))


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
) -> RunResult:
    own = stack is None
    if own:
        directory = Path(tempfile.mkdtemp(prefix=f"scenario-{scenario.name}-"))
        stack = RunningStack(directory, resilience=resilience, env=scenario.env)
        out(f"[{label(resilience)}] starting a fresh stack in {directory} ...")
        stack.up()
    elif stack.resilience != resilience:
        raise ValueError(f"the stack given runs {label(stack.resilience)}")
    keep = True  # the stack's directory (its logs) is kept when the run broke or a check failed
    try:
        result = _run(scenario, stack, out, seed)
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


def _run(scenario: Scenario, stack: RunningStack, out, seed: int) -> RunResult:
    tag = f"[{label(stack.resilience)}]"
    gateway = stack.urls["gateway"]
    for show in scenario.shows[:3]:  # warm up: the cache has seen these shows
        requests.get(f"{gateway}/api/shows/{show}/recommendations/", timeout=5)
    at_start = stack.ledger(("orders", "inventory"))  # a live stack's earlier orders and seats
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
        nemesis = Nemesis(stack, seed, load.elapsed, until=scenario.profile.duration, out=out)
        out(f"{tag} nemesis: seed {seed}, SIGKILLs until {scenario.profile.duration:g} s")
    load.start()
    poller.start()
    if nemesis is not None:
        nemesis.start()
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

    drain_seconds, probes = _drain(stack, before_orders, scenario, poller, lifted, load.elapsed)
    out(
        f"{tag} {load.elapsed():5.1f} s  "
        + (f"drained in {drain_seconds:.1f} s" if drain_seconds is not None else "did NOT drain")
    )
    poller.halt.set()
    poller.join(timeout=5)

    after = {service: policy_counters(stack, service) for service in services}
    ledger = stack.ledger()
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
        audit=audit(ledger, run_orders, answered, before=at_start),
        drain_seconds=drain_seconds,
        recovery=_recovery(poller.seen, lifted, scenario.watch),
        probes=probes,
    )
    if nemesis is not None:
        result.nemesis = {
            "seed": seed,
            "kills": nemesis.kills,
            "worker_kills_mid_task": nemesis.worker_kills_mid_task,
            "payments_kills_after_charge": nemesis.payments_kills_after_charge,
        }
    if stack.resilience:
        result.checks = scenario.checks(result)
    return result


def _drain(stack, before_orders, scenario, poller, lifted, clock) -> tuple[float | None, int]:
    """(Seconds until every order of the run settled and the watched breakers closed, or None;
    orders sent meanwhile)."""
    deadline = time.monotonic() + scenario.drain_timeout

    def settled() -> bool:
        orders = stack.ledger(("orders",))["orders"]["orders"]
        return all(o["settled"] for o in orders if o["id"] not in before_orders)

    def closed() -> bool:
        return all(
            poller.state(f"{service}/{breaker}") in (None, "closed")
            for service, breaker in scenario.watch
        )

    # A breaker leaves open only when a call comes after its wait: as in production, traffic
    # goes on after the fault, here a browse and an order a second until the breakers closed.
    probe = Load(
        stack.urls["gateway"], Profile(duration=scenario.drain_timeout), list(scenario.shows)
    )
    n = 0
    while time.monotonic() < deadline:
        if not closed():
            probe.browse()
            probe.buy(scenario.shows[n % len(scenario.shows)], email=f"probe{n}@example.com")
            n += 1
        elif settled():
            return round(clock() - lifted, 2), n
        time.sleep(1.0)
    return None, n


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
