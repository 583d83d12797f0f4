"""The workshop labs (docs/labs/NN-slug.md) and their checkpoints.

A checkpoint says, item by item, whether what the lab's steps do has happened on the
running stack since ``lab start``: counters and transitions that moved, orders and charges
that were made, read from the services' ``/metrics`` and ledgers, never from anything the
lab commands wrote down themselves. Items assert on ranges and counts, never on exact
percentages, so that a noisy machine does not fail a learner who did the steps.
"""

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from django.conf import settings

from workshop.console.watch import Reading, quantile
from workshop.labs import app_vs_mesh
from workshop.labs import prometheus as lab_prometheus
from workshop.labs.progress import Since, Snapshot
from workshop.scenarios import runner
from workshop.scenarios.runner import Check as Item  # a checkpoint item reads as a check
from workshop.scenarios.stack import RunningStack


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    checkpoint: Callable[[Since], list[Item]]
    ledger: bool = False  # the checkpoint reads the services' ledgers too
    stack: bool = True  # needs the running stack (lab 9 does not)
    # Done by `lab start` after the snapshot, so that the lab begins where its page says.
    prepare: Callable[[RunningStack], str] | None = None

    @property
    def page(self) -> Path:
        return Path("docs") / "labs" / f"{self.number:02d}-{self.slug}.md"


def _shipped(policy: str, section: str, key: str):
    return settings.RESILIENCE_POLICIES[policy][section][key]


def _window_quantile(since: Since, q: float, caller: str, callee: str) -> float | None:
    now = Reading(caller, since.now.taken)
    now.samples = since.now.samples(caller)
    then = Reading(caller, since.start.taken)
    if not since.restarted(caller):
        then.samples = since.start.samples(caller)
    return quantile(q, now, then, "resilience_call_duration_seconds", name=callee)


def _shell(stack: RunningStack, service: str, code: str, failure: str, timeout: float = 60) -> str:
    """Run ``code`` in ``manage.py shell`` with a service's settings: what it printed, or
    RuntimeError if it failed."""
    done = stack.manage("shell", "-c", code, service=service, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{failure}: {done.stderr}")
    return done.stdout


def free_seats(stack: RunningStack, seats: int = 100) -> str:
    """Every show gets ``seats`` free seats (its total raised or lowered to what is sold and
    held, plus that), so that the orders of earlier labs never sell a show out of this one."""
    code = (
        "from django.db.models import F\n"
        "from inventory.models import Show\n"
        f"Show.objects.update(seats_total=F('seats_sold') + F('seats_held') + {seats})\n"
    )
    _shell(stack, "inventory", code, "could not free seats")
    return f"Every show has {seats} seats free for this lab."


def faulted() -> list[str]:
    """Services that still have a fault set (var/chaos/SERVICE.json not empty)."""
    return [
        path.stem
        for path in sorted((Path(settings.VAR_DIR) / "chaos").glob("*.json"))
        if path.read_text().strip() not in ("", "{}")
    ]


# How long `lab start` waits at most for the orders an earlier lab left unsettled: above the
# task worker's longest backoff (ORDERS_SETTLE_BACKOFF_MAX, 30 s) plus a reconciler pass
# (ORDERS_RECONCILE_INTERVAL, 10 s), and above a breaker's open wait when it cannot be reset
# (memory storage: payments' is 30 s).
SETTLE_WAIT = 90.0


def settle_orders(stack: RunningStack, wait: float = SETTLE_WAIT) -> list[str]:
    """Before ``lab start`` reads the stack: orders' breakers shared in Redis reset, and the
    orders an earlier lab left unsettled settled (waited for, ``wait`` s at most; not while
    a fault is still set, which would keep them from settling). What happened, one line each
    (``manage.py orders settle``, orders/settling.py, says why)."""
    faults = faulted()
    args = ["settle", "--wait", f"{float(wait)!r}", *(["--no-wait"] if faults else [])]
    done = stack.manage("orders", *args, service="orders", timeout=wait + 60)
    if done.returncode:
        raise RuntimeError(f"could not settle the orders: {done.stderr}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return settled_lines(found, wait, faults)


def _counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))


def settled_lines(found: dict, wait: float, faults: list[str]) -> list[str]:
    """``settle_orders``' lines from what ``manage.py orders settle`` printed."""
    lines = []
    if found["reset"]:
        lines.append(f"Orders' breakers (shared in Redis) are reset: {', '.join(found['reset'])}.")
    first, left = sum(found["first"].values()), sum(found["left"].values())
    if faults:
        if left:
            lines.append(
                f"Note: {left} orders are left to settle ({_counts(found['left'])}), and not "
                f"waited for: {', '.join(faults)} still has a fault set (`manage.py stack lift`)"
            )
    elif left:
        lines.append(
            f"Note: {left} orders still unsettled after {found['seconds']:g} s of waiting "
            f"({_counts(found['left'])}; {first} at first): the ledgers read now may catch "
            "some of them half-way (`manage.py stack status`, var/log/orders-worker.log)"
        )
    elif first:
        lines.append(
            f"The {first} orders an earlier lab left unsettled ({_counts(found['first'])}) "
            f"settled in {found['seconds']:g} s."
        )
    if found["parked"]:
        lines.append(
            f"Note: {found['parked']} orders are parked, for staff to decide "
            "(`manage.py orders parked`)"
        )
    return lines


def open_breakers(snapshot: Snapshot) -> dict[str, list[str]]:
    """Caller service -> the callees whose breaker is open or half-open in some worker."""
    found = {}
    for service in snapshot.metrics:
        opened = sorted(
            {
                labels["name"]
                for name, labels, value in snapshot.samples(service)
                if name == "resilience_circuitbreaker_process_state"
                and labels["state"] != "closed"
                and value
            }
        )
        if opened:
            found[service] = opened
    return found


RESET_BREAKERS = (
    "from resilience import policies\nfor name in {names!r}: policies[name].breaker.reset()"
)


def close_breakers(stack: RunningStack, opened: dict[str, list[str]]) -> list[str]:
    """Close the breakers an earlier lab left open, so that this lab's alerts and counts are
    its own: the state shared in Redis reset from a shell of the service, then the service
    restarted (a breaker in memory is each worker's own, out of reach but for a restart;
    lab 7 once counted an alert of a gateway worker that no lab traffic had reached since
    lab 5). What was done, one line each."""
    lines = []
    for service, callees in sorted(opened.items()):
        _shell(stack, service, RESET_BREAKERS.format(names=callees), f"{service}: reset")
        stack.stop(service)
        stack.start(service)
        lines.append(
            f"{service} restarted, its breakers closed ({', '.join(callees)} had been left "
            "open or half-open by an earlier lab)."
        )
    return lines


def leftovers(snapshot: Snapshot) -> list[str]:
    """What an earlier lab left behind that would show in this one: faults still set,
    breakers still open, policies changed."""
    notes = [
        f"Note: {service} still has a fault set: `manage.py stack lift`" for service in faulted()
    ]
    for service, opened in open_breakers(snapshot).items():
        for callee in opened:
            notes.append(
                f"Note: {service} -> {callee}: a breaker is still open or half-open in some "
                "worker; it closes after calls succeed (`manage.py lab traffic`)"
            )
    if (Path(settings.VAR_DIR) / "stack" / "policies.json").exists():
        notes.append("Note: policies are changed (`manage.py stack policy reset` undoes it)")
    return notes


# -- 1. timeouts from P99 ---------------------------------------------------------------------------


def timeouts_from_p99(since: Since) -> list[Item]:
    calls = since.delta("gateway", "resilience_retry_calls_total", name="inventory")
    timeout = since.value(
        "gateway", "resilience_policy_setting", name="inventory", setting="attempt_timeout_seconds"
    )
    shipped = _shipped("inventory", "TIMEOUT", "CONNECT") + _shipped("inventory", "TIMEOUT", "READ")
    delayed = since.delta("inventory", "chaos_injected_total", kind="latency")
    timeouts = since.delta(
        "gateway", "resilience_timeout_calls_total", name="inventory", kind="attempt"
    )
    return [
        Item(
            "traffic went through the gateway to inventory",
            calls >= 20,
            f"{calls:.0f} calls since the last restart of the gateway (at least 20)",
        ),
        Item(
            f"inventory's attempt timeout set from the P99: well under the shipped {shipped:g} s",
            timeout is not None and 0.05 <= timeout <= 1.0,
            f"CONNECT + READ = {timeout if timeout is not None else '?'} s "
            "(between 0.05 and 1.0 s)",
        ),
        Item(
            "inventory answered slowly (latency injected through its chaos API)",
            delayed >= 1,
            f"{delayed:.0f} requests delayed",
        ),
        Item(
            "the gateway stopped waiting at the new timeout",
            timeouts >= 1,
            f"{timeouts:.0f} attempts timed out (at least 1)",
        ),
    ]


# -- 2. connect vs read timeout ---------------------------------------------------------------------


def connect_vs_read(since: Since) -> list[Item]:
    refused = since.delta(
        "gateway",
        "resilience_fallback_calls_total",
        name="recommendations",
        reason="upstream_connection",
    )
    slow = since.delta(
        "gateway", "resilience_timeout_calls_total", name="recommendations", kind="attempt"
    )
    read = _shipped("recommendations", "TIMEOUT", "READ")
    return [
        Item(
            "a refused port: the gateway's call failed at once and fell back",
            refused >= 1,
            f"{refused:.0f} fallbacks after a refused connection (at least 1)",
        ),
        Item(
            f"a slow answer: the call was cut at the read timeout ({read:g} s)",
            slow >= 1,
            f"{slow:.0f} attempts timed out (at least 1)",
        ),
    ]


# -- 3. retries and idempotency ---------------------------------------------------------------------


def retries_and_idempotency(since: Since) -> list[Item]:
    charged = Counter(c["order_id"] for c in since.new_charges() if c["status"] == "succeeded")
    naive = sorted(o for o, n in charged.items() if o.startswith("lab3-naive-") and n >= 2)
    keyed = sorted(o for o in charged if o.startswith("lab3-keyed-"))
    orders = [o["id"] for o in since.new_orders()]
    twice = [o for o in orders if charged[o] > 1]
    timeouts = since.delta(
        "orders", "resilience_timeout_calls_total", name="payments", kind="attempt"
    )
    retries = since.delta("orders", "resilience_retry_attempts_total", name="payments")
    return [
        Item(
            "a retry with a new Idempotency-Key charged one order twice (by hand)",
            bool(naive),
            f"orders charged twice: {', '.join(naive) or 'none yet'}",
        ),
        Item(
            "retries with the same key charged once",
            bool(keyed) and all(charged[o] == 1 for o in keyed),
            ", ".join(f"{o}: {charged[o]} charge(s)" for o in keyed) or "no lab3-keyed- order yet",
        ),
        Item(
            "orders' charge attempt timed out and orders retried it",
            timeouts >= 1 and retries >= 1,
            f"{timeouts:.0f} attempts timed out, {retries:.0f} retries "
            "(at least 1 each, since orders last started)",
        ),
        Item(
            "no order placed through the stack charged twice",
            bool(orders) and not twice,
            f"{len(orders)} orders placed, {sum(1 for o in orders if charged[o])} charged, "
            f"{len(twice)} twice",
        ),
    ]


# -- 4. breaker states ------------------------------------------------------------------------------


def breaker_states(since: Since) -> list[Item]:
    moved = Counter(since.transitions("orders", "payments"))
    if settings.RESILIENCE_STORAGE:
        # Shared in Redis, the breaker is orders' task worker's too, and the worker, settling
        # the orders left payment_pending, may be the one that makes the trial calls: the
        # transitions it made are in its log (it serves no /metrics).
        moved.update(
            f"{line['old']}->{line['new']}"
            for line in logged_since("orders-worker.log", TRANSITION, int(since.start.taken))
            if line["name"] == "payments"
        )
    # With memory storage, the state of the worker process that changed last (what the alerts
    # read too); a worker that has not called payments since keeps the state it last saw.
    latest = [
        labels["state"]
        for name, labels, value in since.now.samples("orders")
        if name == "resilience_circuitbreaker_state" and labels["name"] == "payments" and value
    ]
    items = [
        Item(
            f"orders -> payments went {transition}",
            moved.get(transition, 0) >= 1,
            f"{moved.get(transition, 0):.0f} time(s)",
        )
        for transition in ("closed->open", "open->half-open", "half-open->closed")
    ]
    items.append(
        Item(
            "and is closed again",
            latest == ["closed"],
            f"resilience_circuitbreaker_state: {', '.join(latest) or 'not reported'}",
        )
    )
    return items


def close_payments_breaker(stack: RunningStack) -> str:
    """With Redis storage the workers of orders share their breaker for payments, and it
    outlives a restart: an earlier lab may have left it open (or half-open), and then this lab
    would never see it go closed -> open. Reset it (the reset reaches every worker)."""
    code = (
        "from django.conf import settings\n"
        "from resilience import policies\n"
        "if settings.RESILIENCE_STORAGE:\n"
        "    policies['payments'].breaker.reset()\n"
        "    print('shared')\n"
    )
    if "shared" in _shell(stack, "orders", code, "could not reset the breaker"):
        return "Orders' breaker for payments (shared in Redis) is reset: closed, nothing counted."
    return "Orders' breaker for payments starts closed in every worker once orders restarts."


TRANSITION = re.compile(  # the line resilience.breaker logs for a transition a process made
    r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ WARNING resilience\.breaker "
    r"circuit breaker '(?P<name>[\w-]+)': (?P<old>[\w-]+) -> (?P<new>[\w-]+) "
)


# -- 5. the fallback chain --------------------------------------------------------------------------


def fallback_chain(since: Since) -> list[Item]:
    return [
        Item(
            f"recommendations answered from {source}",
            since.delta("gateway", "gateway_recommendations_total", source=source) >= 1,
            f"{since.delta('gateway', 'gateway_recommendations_total', source=source):.0f} answers",
        )
        for source in ("live", "cache", "popular")
    ]


def forget_cached_recommendations(stack: RunningStack) -> str:
    """The gateway's cache has recommendations for every show browsed so far, so that
    "popular" would never show: forget them (only them) for this lab."""
    answer = requests.get(stack.url("gateway", "/api/shows/"), timeout=5)
    if answer.status_code != 200:
        raise RuntimeError(
            f"the gateway could not list the shows ({answer.status_code}): is inventory up?"
        )
    ids = [int(show["id"]) for show in answer.json()]
    code = (
        "from django.core.cache import cache\n"
        "from gateway.services import RECOMMENDATIONS_KEY\n"
        f"cache.delete_many([RECOMMENDATIONS_KEY.format(show_id=i) for i in {ids!r}])\n"
    )
    _shell(stack, "gateway", code, "could not clear the gateway's cache")
    return f"The gateway's cached recommendations of {len(ids)} shows are forgotten."


# -- 6. bulkheads ------------------------------------------------------------------------------------


def bulkheads(since: Since) -> list[Item]:
    def grew(callee, metric, **labels):
        return since.delta("orders", metric, name=callee, **labels)

    # Not notifications' own counters: its threads are all held by the hang, so that it
    # does not answer /metrics either.
    hung = grew("notifications", "resilience_timeout_calls_total")
    rejected = grew("notifications", "resilience_bulkhead_calls_total", kind="rejected")
    paid = grew("payments", "resilience_circuitbreaker_calls_total", kind="successful")
    held = grew("inventory", "resilience_circuitbreaker_calls_total", kind="successful")
    others = {
        callee: grew(callee, "resilience_bulkhead_calls_total", kind="rejected")
        for callee in ("payments", "inventory")
    }
    p99 = _window_quantile(since, 0.99, "gateway", "orders")
    return [
        Item(
            "notifications hung: orders' calls to it timed out",
            hung >= 1,
            f"{hung:.0f} calls timed out (at least 1)",
        ),
        Item(
            "orders' bulkhead for notifications filled and refused calls at once",
            rejected >= 1,
            f"{rejected:.0f} calls rejected (at least 1)",
        ),
        Item(
            "payments and inventory untouched: their bulkheads refused nothing",
            not any(others.values()) and paid >= 5 and held >= 5,
            f"rejected: payments {others['payments']:.0f}, inventory {others['inventory']:.0f}; "
            f"successful calls: payments {paid:.0f}, inventory {held:.0f} (at least 5 each)",
        ),
        Item(
            "orders kept answering the gateway (p99 under 3 s)",
            p99 is not None and p99 < 3.0,
            f"p99 of the gateway's calls to orders: {'-' if p99 is None else f'{p99:.2f} s'}",
        ),
    ]


# -- 7. monitoring and alerts -----------------------------------------------------------------------


RULES = (
    "CircuitBreakerOpen",
    "HighFailureRate",
    "LatencyNearTimeout",
    "RetrySurge",
    "FallbackSurge",
)


def monitoring_and_alerts(since: Since) -> list[Item]:
    try:
        groups = lab_prometheus.get("/api/v1/rules")["groups"]
        targets = lab_prometheus.get("/api/v1/targets")["activeTargets"]
        window = f"{max(1, int(since.seconds))}s"  # since lab start, not before
        fired = lab_prometheus.get(
            "/api/v1/query",
            query=f'max_over_time(ALERTS{{alertname="CircuitBreakerOpen",alertstate="firing"}}[{window}])',
        )["result"]
    except lab_prometheus.PrometheusError as exc:
        return [Item("Prometheus runs with the rules", False, str(exc))]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    up = sorted(t["labels"].get("service", "?") for t in targets if t["health"] == "up")
    edges = sorted(
        f"{r['metric'].get('service')} -> {r['metric'].get('dependency')}" for r in fired
    )
    return [
        Item(
            "Prometheus loaded the alert rules",
            set(RULES) <= loaded,
            f"rules: {', '.join(sorted(loaded)) or 'none'}",
        ),
        Item(
            "Prometheus scrapes the six services",
            len(up) >= 6,
            f"up: {', '.join(up) or 'none'}",
        ),
        Item(
            "CircuitBreakerOpen fired for orders -> payments, and for nothing else",
            edges == ["orders -> payments"],
            f"fired since lab start for: {', '.join(edges) or 'nothing yet'}"
            + ("" if set(edges) <= {"orders -> payments"} else " (see the notes of lab start)"),
        ),
    ]


# -- 8. chaos engineering ---------------------------------------------------------------------------


def sigkilled_since(taken: float) -> list[str]:
    """Programs supervisor saw die of SIGKILL since ``taken`` (its log, var/log/supervisord.log):
    a crash, not a restart (a stop or a restart ends a program with SIGTERM, as expected)."""
    return [line["program"] for line in logged_since("supervisord.log", SIGKILLED, taken)]


SIGKILLED = re.compile(
    r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ WARN exited: (?P<program>[\w-]+) "
    r"\(terminated by SIGKILL; not expected\)"
)


def logged_since(name: str, pattern: re.Pattern, taken: float) -> list[re.Match]:
    """The lines of var/log/NAME that ``pattern`` matches, logged at ``taken`` or later (the
    pattern's group ``at``: the time a line begins with, local time, as supervisor and the
    services log it)."""
    log = Path(settings.VAR_DIR) / "log" / name
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [m for m in map(pattern.match, lines) if m and _logged_at(m["at"]) >= taken]


def _logged_at(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def chaos_engineering(since: Since) -> list[Item]:
    killed = sigkilled_since(since.start.taken - 1)
    orders = {o["id"] for o in since.new_orders()}
    audit = runner.audit(since.now.ledger, orders, orders, before=since.start.ledger)
    wrong = {
        key: found for key, found in audit.items() if key not in ("orders", "unsettled") and found
    }
    return [
        Item(
            "processes of this stack were SIGKILLed (supervisor saw them crash)",
            len(killed) >= 3,
            f"{len(killed)} SIGKILLs of {', '.join(sorted(set(killed))) or 'nothing'} "
            "(at least 3; a gunicorn worker killed alone is its master's business, not counted)",
        ),
        Item(
            "orders were placed while they were",
            len(orders) >= 20,
            f"{len(orders)} orders (at least 20)",
        ),
        Item(
            "every order settled: confirmed, or failed with nothing kept",
            bool(orders) and not audit["unsettled"],
            f"{len(audit['unsettled'])} unsettled",
        ),
        Item(
            "the audit holds: none charged twice, lost, stuck, oversold or e-mailed twice",
            not wrong,
            "; ".join(f"{key}: {len(found)}" for key, found in wrong.items()) or "nothing wrong",
        ),
    ]


# -- 9. application level vs mesh level (no stack needed) ----------------------------------------


def app_vs_mesh_items(since: Since) -> list[Item]:
    missing = app_vs_mesh.checkpoint()
    export = Path(settings.VAR_DIR) / Path(app_vs_mesh.EXPORT).relative_to("var")
    if not missing and export.stat().st_mtime < since.start.taken:
        missing = [
            f"{app_vs_mesh.EXPORT} was exported before the lab started: export it again with "
            f"`{app_vs_mesh.COMMAND}`"
        ]
    if not missing:
        return [
            Item(
                "the Istio rules are exported, valid, current, and the gaps are listed",
                True,
                app_vs_mesh.EXPORT,
            )
        ]
    return [Item(problem, False, "") for problem in missing]


LABS = {
    lab.slug: lab
    for lab in [
        Lab(1, "timeouts-from-p99", "A timeout from the observed P99", timeouts_from_p99),
        Lab(2, "connect-vs-read", "Connect timeout vs read timeout", connect_vs_read),
        Lab(
            3,
            "retries-and-idempotency",
            "Retries, backoff and jitter, and the double charge an idempotency key prevents",
            retries_and_idempotency,
            ledger=True,
        ),
        Lab(
            4,
            "breaker-states",
            "The circuit breaker's states",
            breaker_states,
            prepare=close_payments_breaker,
        ),
        Lab(
            5,
            "fallback-chain",
            "The fallback chain: live, cache, popular",
            fallback_chain,
            prepare=forget_cached_recommendations,
        ),
        Lab(6, "bulkheads", "Bulkheads of 10, 10 and 5", bulkheads),
        Lab(7, "monitoring-and-alerts", "Monitoring and alerts", monitoring_and_alerts),
        Lab(
            8,
            "chaos-engineering",
            "Chaos engineering: a hypothesis, the Chaos Monkey, the audit",
            chaos_engineering,
            ledger=True,
        ),
        Lab(
            9,
            "app-vs-mesh",
            "Application level vs mesh level",
            app_vs_mesh_items,
            stack=False,
        ),
    ]
}
