"""The audit of a run: what the services' ledgers (``manage.py ledger``) say was left behind.

Each rule is a named list in the audit's dict: empty when the rule holds, else the orders
(ids), shows (ids) or payment keys that break it. The rules judge the whole ledger, every
order, charge, show and hold; with ``before`` (the ledger read before the run), what was
already wrong then is not blamed on the run (on a live stack an earlier lab may have run
without resilience on purpose, and left double charges behind). On a fresh stack ``before``
holds no order, so nothing is excused.

Two rules are not read from the ledger: ``unsettled_past_bound`` (the orders the drain still
saw unsettled ``UNSETTLED_BOUND`` seconds after the faults were lifted), and
``ledger_inconsistent`` (the ledgers were read again and again and no two reads in a row were
the same: the audit would judge a moment that never was).
"""

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

UNSETTLED_BOUND = 60.0  # seconds after the faults were lifted: every order settled by then
LEDGER_READS = 5  # at most this many reads of every ledger to find two alike in a row


def read_consistent(read: Callable[[], dict], attempts: int = LEDGER_READS) -> tuple[dict, int]:
    """Read the ledgers (``read``) until two reads in a row are identical: (that ledger, the
    reads it took), or (the last read, 0) if no two were within ``attempts``."""
    previous = read()
    for n in range(2, attempts + 1):
        ledger = read()
        if ledger == previous:
            return ledger, n
        previous = ledger
    return previous, 0


def seats_unmatched(ledger: dict) -> dict[int, int]:
    """Show -> seats sold minus the seats of the orders that have them (0: they match)."""
    holds = {h["order_id"]: h for h in ledger["inventory"]["holds"]}
    # Seats sold belong to confirmed orders, and to paid ones whose seats were just sold (the
    # step between is the worker's: on a live stack, an order from before the run may be
    # there as the ledger is read; an order of the run left there fails paid_not_confirmed).
    owned: Counter = Counter()
    for order in ledger["orders"]["orders"]:
        # Also one read payment_pending whose hold is read confirmed: the ledgers are read one
        # service after another, orders first, and an order is paid before its seats are sold,
        # so the worker charged it and sold its seats in between (issue 14's labs mismatch).
        selling = (
            order["status"] in ("payment_pending", "paid")
            and holds.get(order["id"], {}).get("status") == "confirmed"
        )
        if order["status"] == "confirmed" or selling:
            owned[order["show_id"]] += order["quantity"]
    return {s["id"]: s["seats_sold"] - owned[s["id"]] for s in ledger["inventory"]["shows"]}


def seats_held_unmatched(ledger: dict) -> dict[int, int]:
    """Show -> its seats_held minus the seats of its holds still held (0: they match)."""
    held: Counter = Counter()
    for hold in ledger["inventory"]["holds"]:
        if hold["status"] == "held":
            held[hold["show_id"]] += hold["quantity"]
    return {s["id"]: s["seats_held"] - held[s["id"]] for s in ledger["inventory"]["shows"]}


def _money(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def violations(ledger: dict) -> dict[str, set]:
    """Rule -> what breaks it in this ledger (order ids, shows, keys; for the seat counts,
    (show, difference) pairs, so that a difference that changed is a new one)."""
    orders = {o["id"]: o for o in ledger["orders"]["orders"]}
    charges = ledger["payments"]["charges"]
    by_id = {c.get("id"): c for c in charges}
    by_refund = {c["refund_id"]: c for c in charges if c.get("refund_id") is not None}
    succeeded = [c for c in charges if c["status"] == "succeeded"]
    kept = Counter(c["order_id"] for c in succeeded if not c["refunded"])
    charged = Counter(c["order_id"] for c in succeeded)
    holds = {h["order_id"]: h for h in ledger["inventory"]["holds"]}
    prices = {s["id"]: _money(s.get("price")) for s in ledger["inventory"]["shows"]}
    notifications = ledger["notifications"]
    mail = notifications["mail"]
    if mail is None:  # a mail backend that keeps nothing to count: the rows, sent
        mail = [
            {"order_id": n["order_id"], "kind": n["kind"]}
            for n in notifications["rows"]
            if n["status"] == "sent"
        ]
    sent: Counter = Counter((m["order_id"], m["kind"]) for m in mail)

    def orders_where(test) -> set[str]:
        return {o for o, order in orders.items() if test(o, order)}

    def amount_wrong(o: str, order: dict) -> bool:
        price, amount = prices.get(order["show_id"]), _money(order.get("amount"))
        return None not in (price, amount) and amount != price * order["quantity"]

    def ids_not_its_own(o: str, order: dict) -> bool:
        charge_id, refund_id = order.get("charge_id"), order.get("refund_id")
        wrong_charge = charge_id is not None and by_id.get(charge_id, {}).get("order_id") != o
        wrong_refund = refund_id is not None and by_refund.get(refund_id, {}).get("order_id") != o
        return wrong_charge or wrong_refund

    final = ("confirmed", "failed")
    return {
        "double_charged": orders_where(lambda o, _: charged[o] > 1),
        "paid_not_confirmed": orders_where(lambda o, x: kept[o] and x["status"] != "confirmed"),
        "paid_without_seats": orders_where(
            lambda o, _: kept[o] and holds.get(o, {}).get("status") != "confirmed"
        ),
        "failed_but_charged": orders_where(lambda o, x: kept[o] and x["status"] == "failed"),
        "confirmed_not_paid": orders_where(lambda o, x: x["status"] == "confirmed" and not kept[o]),
        "unsettled": orders_where(lambda o, x: not x["settled"]),
        "stuck": set(ledger["orders"]["stuck"]),
        "orphaned_running_tasks": set(ledger["orders"]["orphaned_running_tasks"]),
        "orphaned_holds": {
            o
            for o, hold in holds.items()
            if hold["status"] == "held" and orders.get(o, {}).get("status", "failed") in final
        },
        "failed_with_seats": orders_where(
            lambda o, x: (
                x["status"] == "failed" and holds.get(o, {}).get("status") in ("held", "confirmed")
            )
        ),
        "oversold_shows": {
            s["id"]
            for s in ledger["inventory"]["shows"]
            if s["seats_sold"] + s["seats_held"] > s["seats_total"]
        },
        "seats_not_matching_orders": {(s, n) for s, n in seats_unmatched(ledger).items() if n},
        "seats_held_not_matching_holds": {
            (s, n) for s, n in seats_held_unmatched(ledger).items() if n
        },
        "order_amount_not_price_times_quantity": orders_where(amount_wrong),
        "charge_not_the_orders_amount": {
            c["order_id"]
            for c in succeeded
            if c["order_id"] in orders
            and _money(orders[c["order_id"]].get("amount")) != _money(c.get("amount"))
        },
        "refund_not_its_charge": {
            c["order_id"]
            for c in charges
            if c["refunded"] and _money(c.get("refund_amount")) != _money(c.get("amount"))
        },
        "charge_or_refund_of_another_order": orders_where(ids_not_its_own),
        "charged_for_no_order": {c["order_id"] for c in charges if c["order_id"] not in orders},
        "payments_in_flight": {r["key"] for r in ledger["payments"].get("in_flight", [])},
        "parked": orders_where(lambda o, x: bool(x.get("parked_reason"))),
        "emails_not_exactly_once": orders_where(
            lambda o, x: x["status"] == "confirmed" and sent[(o, "order_confirmed")] != 1
        ),
        "refund_notices_not_once": orders_where(
            lambda o, x: x["refunded"] and sent[(o, "order_refunded")] != 1
        ),
    }


SEAT_RULES = ("seats_not_matching_orders", "seats_held_not_matching_holds")


def audit(
    ledger: dict,
    run_orders: set[str],
    answered: set[str],
    before: dict | None = None,
    *,
    late: list[str] | tuple = (),
    reads: int | None = None,
) -> dict[str, list]:
    """Every rule's list for this ledger, what ``before`` already showed left out; ``orders``
    lists the run's own orders, ``answered_but_missing`` the orders a client was answered
    about that no service has. ``late``: the drain's orders unsettled past the bound;
    ``reads``: how many reads found the ledger consistent (0: none did)."""
    found = violations(ledger)
    if before is not None:
        already = violations(before)
        found = {rule: keys - already[rule] for rule, keys in found.items()}
    every_order = {o["id"] for o in ledger["orders"]["orders"]}
    result: dict[str, list] = {
        "orders": sorted(run_orders & every_order),
        "answered_but_missing": sorted(answered - every_order),
    }
    for rule, keys in found.items():
        if rule in SEAT_RULES:
            result[rule] = sorted({show for show, _ in keys})
        else:
            result[rule] = sorted(keys, key=str)
    result["unsettled_past_bound"] = sorted(late)
    result["ledger_inconsistent"] = (
        [f"no two reads in a row alike in {LEDGER_READS}"] if reads == 0 else []
    )
    return result


def lost(audit_: dict) -> list[str]:
    """Orders a user paid for or was told about that did not end as they should."""
    return sorted(set(audit_["answered_but_missing"]) | set(audit_["paid_not_confirmed"]))
