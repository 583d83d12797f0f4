"""The failure scenarios (docs/scenarios.md): what breaks, when, under which load, and what must hold
with resilience on (the checks). ``docs/scenarios.md`` explains each one."""

import math

from resilience.conf import build_config
from workshop.scenarios.audit import UNSETTLED_BOUND
from workshop.scenarios.load import (
    BUSINESS,
    OK,
    ORDER,
    RECOMMENDATIONS,
    SHOW,
    SHOWS,
    Profile,
    summarize,
    tally,
)
from workshop.scenarios.runner import Check, RunResult, Scenario, Step, lost

BROWSING = (SHOWS, SHOW, RECOMMENDATIONS)


# -- steps ---------------------------------------------------------------------------------------


def chaos(service: str, fault: dict, *, at: float, label: str) -> Step:
    return Step(at, label, lambda stack: stack.inject(service, fault))


def lift(service: str, *, at: float) -> Step:
    return Step(at, f"{service}: fault lifted", lambda stack: stack.lift(service), lifts=True)


def sigkill(program: str, *, at: float, stay_down: bool = False) -> Step:
    """A crash: SIGKILL the program's whole process group. Supervisor starts it again at once,
    unless ``stay_down`` (a lost host): then it is down until the faults are lifted."""
    label = f"{program}: SIGKILL" + (", stays down" if stay_down else "")
    return Step(at, label, lambda stack: stack.crash(program, stay_down=stay_down))


# -- checks --------------------------------------------------------------------------------------


def _p99(result: RunResult, endpoints) -> float:
    table = result.endpoints()
    return max((table[e]["p99"] for e in endpoints if e in table), default=0.0)


def p99_under(result: RunResult, endpoints, seconds: float, what: str) -> Check:
    p99 = _p99(result, endpoints)
    return Check(f"{what}: p99 under {seconds:g} s", p99 < seconds, f"p99 {p99:.2f} s")


def success_at_least(result: RunResult, endpoints, ratio: float, what: str) -> Check:
    samples = [s for s in result.samples if s.endpoint in endpoints]
    good = sum(s.outcome in (OK, BUSINESS) for s in samples)
    measured = good / len(samples) if samples else 0.0
    return Check(
        f"{what}: success at least {ratio:.0%}",
        bool(samples) and measured >= ratio,
        f"{good}/{len(samples)} ({measured:.1%})",
    )


def orders_answered(result: RunResult) -> Check:
    """Every order got an answer: confirmed or payment_pending (or a sold-out refusal)."""
    orders = result.of(ORDER)
    good = [s for s in orders if s.outcome in (OK, BUSINESS)]
    return Check(
        "every order answered (confirmed, payment_pending or sold out)",
        bool(orders) and len(good) == len(orders),
        f"{len(good)}/{len(orders)}: {summarize(orders)}",
    )


def nothing_lost(result: RunResult) -> list[Check]:
    a = result.audit

    def none(key: str) -> str:
        return f"{len(a[key])}" + (f": {a[key][:3]}" if a[key] else "")

    return [
        Check("no order charged twice", not a["double_charged"], none("double_charged")),
        Check(
            "no order lost (answered but missing, or paid and not confirmed)",
            not lost(a),
            f"{len(lost(a))}" + (f": {lost(a)[:3]}" if lost(a) else ""),
        ),
        Check(
            "never paid without seats, never failed but charged, never confirmed unpaid",
            not (a["paid_without_seats"] or a["failed_but_charged"] or a["confirmed_not_paid"]),
            f"{none('paid_without_seats')} / {none('failed_but_charged')} / "
            f"{none('confirmed_not_paid')}",
        ),
        Check(
            "no seat oversold; seats sold = seats of confirmed orders",
            not a["oversold_shows"] and not a["seats_not_matching_orders"],
            f"oversold {a['oversold_shows']}, mismatched {a['seats_not_matching_orders']}",
        ),
        Check(
            "nothing stuck without work queued; no task left running by a dead worker; "
            "no hold left for a finished order",
            not (a["stuck"] or a["orphaned_running_tasks"] or a["orphaned_holds"]),
            f"{none('stuck')} / {none('orphaned_running_tasks')} / {none('orphaned_holds')}",
        ),
    ]


def stricter_audit(result: RunResult) -> list[Check]:
    """The audit's stricter rules (workshop/scenarios/audit.py): amounts, ids, seat counts,
    payments in flight, parked orders, the drain's bound, a consistent read."""
    a = result.audit

    def none(*keys: str) -> str:
        return " / ".join(f"{len(a[k])}" + (f": {a[k][:3]}" if a[k] else "") for k in keys)

    def check(description: str, *keys: str) -> Check:
        return Check(description, not any(a[k] for k in keys), none(*keys))

    return [
        check(
            "every charge is its order's price x quantity, every refund its charge",
            "order_amount_not_price_times_quantity",
            "charge_not_the_orders_amount",
            "refund_not_its_charge",
        ),
        check(
            "every charge and refund an order records is that order's at payments",
            "charge_or_refund_of_another_order",
            "charged_for_no_order",
        ),
        check(
            "seats held = the seats of the holds held, per show; no failed order keeps seats",
            "seats_held_not_matching_holds",
            "failed_with_seats",
        ),
        check("no payment left in flight; no order parked", "payments_in_flight", "parked"),
        check(
            f"no order unsettled {UNSETTLED_BOUND:g} s after the faults were lifted; the "
            "ledgers read alike twice in a row",
            "unsettled_past_bound",
            "ledger_inconsistent",
        ),
    ]


def paused_checks(result: RunResult) -> list[Check]:
    """With ``--pauses``: processes paused past their leases, a task worker among them while
    it ran a task."""
    n = result.nemesis
    if not n.get("pausing"):
        return []
    return [
        Check(
            "processes paused (SIGSTOP) past their leases, then resumed",
            n.get("pauses", 0) >= 1,
            f"{n.get('pauses', 0)}",
        ),
        Check(
            "a task worker paused while it ran a task, past its heartbeat's lease",
            n.get("worker_pauses_mid_task", 0) >= 1,
            f"{n.get('worker_pauses_mid_task', 0)} ({n.get('worker_pauses_reaped', 0)} of "
            "them reaped by another worker meanwhile)",
        ),
    ]


def drained(result: RunResult) -> Check:
    return Check(
        "every order settled after recovery (confirmed exactly when charged)",
        result.drain_seconds is not None
        and not result.audit["unsettled"]
        and not result.audit["confirmed_not_paid"],
        f"drained in {result.drain_seconds} s; unsettled {len(result.audit['unsettled'])}",
    )


def opened(result: RunResult, breaker: str) -> Check:
    return Check(
        f"the {breaker} breaker opened", result.ever(breaker, "open"), _states(result, breaker)
    )


def reclosed(result: RunResult, breaker: str) -> Check:
    """Closed again after the fault, within its open wait plus the time for its trial calls."""
    wait = build_config(breaker.split("/")[1]).circuit_breaker.wait_duration_in_open_state
    took = result.recovery.get(breaker, 0.0)
    return Check(
        f"the {breaker} breaker closed within its wait ({wait:g} s) plus 15 s of trial calls",
        took is not None and took <= wait + 15,
        "stayed closed" if breaker not in result.recovery else f"closed after {took} s",
    )


def _states(result: RunResult, breaker: str) -> str:
    return " -> ".join(f"{s}@{t:g}s" for t, b, s in result.breakers if b == breaker) or "none"


def emails_once(result: RunResult) -> Check:
    """Counted in the mail backend (messages handed over), not in rows."""
    wrong = result.audit["emails_not_exactly_once"] + result.audit["refund_notices_not_once"]
    return Check(
        "every confirmed order e-mailed exactly once (and every refunded one told once)",
        not wrong,
        f"{len(wrong)} not once",
    )


def answered_in_the_end(result: RunResult) -> Check:
    """Every order (Idempotency-Key) got a final answer, its client retrying as told."""
    keys: dict[str, object] = {}
    for sample in result.of(ORDER):
        keys[sample.key] = sample
    final = [s for s in keys.values() if s.outcome in (OK, BUSINESS)]
    return Check(
        "every order answered in the end, its client retrying with the same key",
        bool(keys) and len(final) == len(keys),
        f"{len(final)}/{len(keys)} orders; {len(result.of(ORDER))} attempts",
    )


def counted(result: RunResult, what: str, counters, service: str, policy: str) -> Check:
    total = sum(result.total(c, service, policy) for c in counters)
    return Check(what, total > 0, f"{total:g} ({' + '.join(counters)} on {service}->{policy})")


# -- the scenarios -------------------------------------------------------------------------------

# Enough buyers that, without resilience, the gateway's 2 x 16 threads fill with orders waiting
# on payments: the cascade of the notes. With resilience the same load is answered in seconds.
PAYMENT_LOAD = Profile(
    browsers=4,
    buyers=30,
    orders_per_buyer=3,
    duration=25,
    buyer_think=0.5,
    browser_think=0.2,
    client_timeout=10,
)
CHARGES = {"path_prefix": "/api/charges/"}


# Buyers whose clients retry (same key) on no answer, a 5xx or a 409, a fifth of them
# double-clicking; enough orders to sell most of the demo's 225 seats.
CHAOS_LOAD = Profile(
    browsers=2,
    buyers=6,
    orders_per_buyer=100,
    duration=60,
    buyer_think=1.0,
    browser_think=0.5,
    client_timeout=10,
    retry_for=45,
    duplicate_rate=0.2,
)


def _kills_expected(result: RunResult) -> int:
    """A kill every 1 to 3 s, some time spent on the worst moments: 15 in the full 60 s."""
    return max(3, int(result.profile.duration / 4))


def payment_checks(result: RunResult) -> list[Check]:
    return [
        orders_answered(result),
        p99_under(result, [ORDER], 8.0, "orders"),
        success_at_least(result, BROWSING, 1.0, "browsing"),
        p99_under(result, BROWSING, 1.0, "browsing"),
        opened(result, "orders/payments"),
        drained(result),
        reclosed(result, "orders/payments"),
        *nothing_lost(result),
    ]


def retry_storm_checks(result: RunResult) -> list[Check]:
    calls = sum(
        result.total(f"retry_{kind}", "orders", "payments")
        for kind in (
            "successful_without_retry",
            "successful_with_retry",
            "failed_without_retry",
            "failed_with_retry",
        )
    )
    retries = result.total("retries", "orders", "payments")
    retry = build_config("payments").retry
    ratio, window, floor = (
        retry.budget_ratio,
        retry.budget_window,
        retry.budget_min_retries_per_second,
    )
    # The floor is per process and per window: 2 gunicorn workers, windows the run spans.
    windows = math.ceil((result.profile.duration + 10) / window) + 1
    budget = ratio * calls + floor * window * windows * 2
    return [
        Check(
            f"retries within the budget ({ratio:.0%} of calls + the floor)",
            calls > 0 and retries <= budget,
            f"{retries:g} retries for {calls:g} calls (budget {budget:.0f}); "
            f"{calls + retries:g} attempts at payments = x{(calls + retries) / max(calls, 1):.2f}",
        ),
        orders_answered(result),
        drained(result),
        *nothing_lost(result),
    ]


SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            name="payment-slow",
            summary="payments answers every charge 5 s late (its card processor slowed down)",
            profile=PAYMENT_LOAD,
            steps=(
                chaos(
                    "payments",
                    {"latency_ms": 5000, "match": CHARGES},
                    at=0,
                    label="payments: +5 s on every charge",
                ),
            ),
            checks=payment_checks,
        ),
        Scenario(
            name="payment-hang",
            summary="payments accepts charges and never answers",
            profile=PAYMENT_LOAD,
            steps=(
                chaos("payments", {"hang": True, "match": CHARGES}, at=0, label="payments: hang"),
            ),
            checks=payment_checks,
        ),
        Scenario(
            name="payment-down",
            summary="payments crashes (SIGKILL) and stays down: connections are refused",
            profile=Profile(
                browsers=3, buyers=6, orders_per_buyer=15, duration=15, buyer_think=1.0
            ),
            steps=(sigkill("payments", at=2, stay_down=True),),
            checks=lambda r: [
                orders_answered(r),
                p99_under(r, [ORDER], 8.0, "orders"),
                success_at_least(r, BROWSING, 1.0, "browsing"),
                opened(r, "orders/payments"),
                drained(r),
                reclosed(r, "orders/payments"),
                *nothing_lost(r),
            ],
        ),
        Scenario(
            name="timed-out-but-charged",
            summary="payments charges, then answers 2.5 s late: after the caller's 1.5 s timeout",
            profile=Profile(browsers=2, buyers=20, orders_per_buyer=1, duration=10),
            steps=(
                chaos(
                    "payments",
                    {"delay_response_ms": 2500, "match": CHARGES},
                    at=0,
                    label="payments: answers 2.5 s after charging",
                ),
            ),
            checks=lambda r: [
                orders_answered(r),
                counted(r, "payment attempts timed out", ["timeout_attempt"], "orders", "payments"),
                drained(r),
                *nothing_lost(r),
            ],
        ),
        Scenario(
            name="notification-slow",
            summary="notifications accepts every send and never answers",
            profile=Profile(browsers=2, buyers=20, orders_per_buyer=1, duration=10),
            steps=(
                chaos(
                    "notifications",
                    {"hang": True, "match": {"path_prefix": "/api/notifications/"}},
                    at=0,
                    label="notifications: hang",
                ),
            ),
            watch=(("orders", "notifications"),),
            checks=lambda r: [
                Check(
                    "every order confirmed",
                    [s.detail for s in r.of(ORDER)] == ["confirmed"] * len(r.of(ORDER)),
                    summarize(r.of(ORDER)),
                ),
                p99_under(r, [ORDER], 3.0, "orders"),
                counted(
                    r,
                    "orders stopped waiting on notifications (bulkhead full or breaker open)",
                    ["bulkhead_rejected", "breaker_not_permitted"],
                    "orders",
                    "notifications",
                ),
                drained(r),
                emails_once(r),
                *nothing_lost(r),
            ],
        ),
        Scenario(
            name="recommendations-down",
            summary="recommendations crashes (SIGKILL) and stays down",
            profile=Profile(browsers=6, buyers=2, orders_per_buyer=1, duration=10),
            steps=(sigkill("recommendations", at=0, stay_down=True),),
            watch=(("gateway", "recommendations"),),
            checks=lambda r: [
                success_at_least(r, BROWSING, 1.0, "browsing"),
                p99_under(r, [RECOMMENDATIONS], 2.0, "recommendations"),
                Check(
                    "recommendations answered from the cache and from popular shows",
                    {"source=cache", "source=popular"} <= set(tally(r.of(RECOMMENDATIONS))),
                    summarize(r.of(RECOMMENDATIONS)),
                ),
                orders_answered(r),
            ],
        ),
        Scenario(
            name="inventory-down",
            summary="inventory crashes (SIGKILL) and stays down",
            profile=Profile(
                browsers=3, buyers=5, orders_per_buyer=12, duration=12, buyer_think=1.0
            ),
            steps=(sigkill("inventory", at=2, stay_down=True),),
            # The gateway's orders breaker too: orders answers each order with a 503 that
            # names inventory, and the gateway passes it on without counting it against orders.
            watch=(("orders", "inventory"), ("gateway", "inventory"), ("gateway", "orders")),
            checks=lambda r: [
                Check(
                    "every order answered: confirmed, or a clear 503 naming inventory",
                    all(
                        s.outcome == OK or s.detail == "503 inventory_unavailable"
                        for s in r.of(ORDER)
                    ),
                    summarize(r.of(ORDER)),
                ),
                Check(
                    "the gateway's orders breaker stayed closed: orders itself was fine",
                    not r.ever("gateway/orders", "open"),
                    _states(r, "gateway/orders"),
                ),
                p99_under(r, [ORDER], 5.0, "orders"),
                drained(r),
                *nothing_lost(r),
            ],
        ),
        Scenario(
            name="retry-storm",
            summary="payments fails half its calls with 503",
            profile=Profile(
                browsers=2, buyers=20, orders_per_buyer=4, duration=15, buyer_think=0.2
            ),
            steps=(
                chaos(
                    "payments",
                    {"error_rate": 0.5, "error_status": 503, "match": CHARGES},
                    at=0,
                    label="payments: 50% of charges fail with 503",
                ),
            ),
            checks=retry_storm_checks,
        ),
        Scenario(
            name="valentines-day",
            summary="15 times the normal load while payments' latency climbs (its database "
            "overloading): 0.2, 0.6, 1.2 then 2.4 s",
            profile=Profile(
                browsers=15,
                buyers=15,
                orders_per_buyer=10,
                duration=25,
                buyer_think=1.0,
                browser_think=1.0,
                client_timeout=15,
            ),
            steps=tuple(
                chaos(
                    "payments",
                    {"latency_ms": ms, "match": CHARGES},
                    at=at,
                    label=f"payments: +{ms} ms",
                )
                for at, ms in ((0, 200), (5, 600), (10, 1200), (15, 2400))
            ),
            checks=lambda r: [
                orders_answered(r),
                success_at_least(r, BROWSING, 0.99, "browsing"),
                drained(r),
                *nothing_lost(r),
            ],
        ),
        Scenario(
            name="chaos-monkey",
            summary="a seeded nemesis SIGKILLs gunicorn workers, whole services, the task "
            "worker and the sweeper (and aims at the worst moments) while buyers retry with "
            "the same key",
            profile=CHAOS_LOAD,
            steps=(),
            nemesis=True,
            watch=(("orders", "payments"), ("orders", "inventory")),
            drain_timeout=150.0,
            # Holds that expire during the run (outages longer than 20 s), so that the
            # re-hold and the refund paths run under the nemesis too.
            env={"SEAT_HOLD_TTL": "20", "SEAT_HOLD_SWEEP_EVERY": "3"},
            checks=lambda r: [
                Check(
                    f"at least {_kills_expected(r)} SIGKILLs"
                    + (" and pauses" if r.nemesis.get("pausing") else ""),
                    r.nemesis.get("kills", 0) + r.nemesis.get("pauses", 0) >= _kills_expected(r),
                    f"{r.nemesis.get('kills', 0)} SIGKILLs, {r.nemesis.get('pauses', 0)} pauses "
                    f"(seed {r.nemesis.get('seed')})",
                ),
                Check(
                    "the task worker SIGKILLed while it ran a task",
                    r.nemesis.get("worker_kills_mid_task", 0) >= 1,
                    f"{r.nemesis.get('worker_kills_mid_task', 0)}",
                ),
                Check(
                    "payments SIGKILLed after it charged, before it answered",
                    r.nemesis.get("payments_kills_after_charge", 0) >= 1,
                    f"{r.nemesis.get('payments_kills_after_charge', 0)}",
                ),
                *paused_checks(r),
                answered_in_the_end(r),
                drained(r),
                emails_once(r),
                *nothing_lost(r),
                *stricter_audit(r),
            ],
        ),
        Scenario(
            name="recovery",
            summary="payments hangs for 8 s, then recovers while the load goes on",
            profile=Profile(
                browsers=2, buyers=6, orders_per_buyer=30, duration=45, buyer_think=1.5
            ),
            steps=(
                chaos("payments", {"hang": True, "match": CHARGES}, at=2, label="payments: hang"),
                lift("payments", at=10),
            ),
            checks=lambda r: [
                opened(r, "orders/payments"),
                reclosed(r, "orders/payments"),
                drained(r),
                *nothing_lost(r),
            ],
        ),
    ]
}
