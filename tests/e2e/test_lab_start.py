"""``lab start`` on a real stack that an earlier lab left unsettled (issue 14).

Lab 7 leaves a few dozen orders payment_pending behind the breaker it opened; the task worker
settles them later, in a burst. Lab 8's ``lab start`` reads the ledgers one service after the
other, seconds apart: read in that burst, an order read payment_pending whose hold is read
confirmed looked like seats sold without an order. ``lab start`` now settles first (orders'
shared breakers reset, the orders waited for, bounded), then reads: here, right after payments
failed every charge and the fault was lifted, the ledger it keeps must have every order
settled and every show's seats owned by its orders.
"""

import json

import pytest

from workshop.scenarios import runner
from workshop.scenarios.stack import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.labs]  # with the lab pages: `make labs`

UNSETTLED = (
    "SELECT count(*) FROM orders_order WHERE NOT ("
    "(status = 'confirmed' AND notified AND booking_recorded) OR "
    "(status = 'failed' AND seats_released AND (refund_id IS NULL OR notified)))"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with RunningStack(tmp_path_factory.mktemp("lab-start")) as running:
        yield running


@pytest.mark.timeout(300)
def test_lab_start_reads_the_ledgers_of_a_settled_stack(stack):
    # What lab 7 does: payments fails every charge while buyers order; orders' breaker opens.
    stack.inject("payments", {"error_rate": 1.0, "match": {"path_prefix": "/api/charges/"}})
    traffic = stack.manage(
        "lab", "traffic", "--seconds", "4", "--browsers", "0", "--buyers", "3", timeout=90
    )
    assert traffic.returncode == 0, traffic.stderr
    left = stack.query("orders", UNSETTLED)[0][0]
    assert left >= 3, "the broken payments left no order unsettled: nothing to test"
    stack.lift("payments")  # lab 7's clean-up

    started = stack.manage("lab", "start", "chaos-engineering", timeout=240)
    assert started.returncode == 0, started.stdout + started.stderr

    ledger = json.loads((stack.var_dir / "labs" / "chaos-engineering.json").read_text())["ledger"]
    orders = ledger["orders"]["orders"]
    assert len(orders) >= left
    assert [o["status"] for o in orders if not o["settled"]] == []
    assert runner.seats_unmatched(ledger) == {
        show["id"]: 0 for show in ledger["inventory"]["shows"]
    }
    assert "an earlier lab left unsettled" in started.stdout, started.stdout
    if stack.redis_url:
        assert "Orders' breakers (shared in Redis) are reset" in started.stdout
    # Whatever breaker the broken payments left open in some worker is closed (reset where
    # shared, the service restarted where each worker keeps its own): the lab's own alerts.
    for service in ("gateway", "orders"):
        left_open = [
            labels
            for name, labels, value in stack.metrics(service)
            if name == "resilience_circuitbreaker_process_state"
            and labels["state"] != "closed"
            and value
        ]
        assert left_open == [], (service, left_open, started.stdout)
