"""The timeout-budget check across the service graph (manage.py budgets)."""

from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command

from booking.budgets import Graph


def test_the_shipped_configuration_passes():
    out = StringIO()
    call_command("budgets", stdout=out)
    text = out.getvalue()
    assert "Every caller waits at least as long as its callee may work." in text
    assert "gateway -> orders -> payments" in text and "x3" in text


def graph(gateway_orders_read: float, gateway_orders_attempts: int = 2) -> Graph:
    policies = {
        "orders": {
            "TIMEOUT": {"CONNECT": 0.5, "READ": gateway_orders_read},
            "DEADLINE": 20.0,
            "RETRY": {"MAX_ATTEMPTS": gateway_orders_attempts},
        },
        "payments": {
            "TIMEOUT": {"CONNECT": 1.0, "READ": 1.5},
            "DEADLINE": 4.0,
            "RETRY": {"MAX_ATTEMPTS": 3},
        },
        "inventory": {
            "TIMEOUT": {"CONNECT": 0.5, "READ": 1.5},
            "DEADLINE": 2.5,
            "RETRY": {"MAX_ATTEMPTS": 2},
        },
    }
    empty = SimpleNamespace(RESILIENCE_POLICIES=policies, CALL_PATHS={})
    return Graph(
        {
            "gateway": SimpleNamespace(
                RESILIENCE_POLICIES=policies, CALL_PATHS={"POST /orders": ["orders"]}
            ),
            "orders": SimpleNamespace(
                RESILIENCE_POLICIES=policies,
                CALL_PATHS={"POST /orders": ["inventory", "payments", "inventory"]},
            ),
            "payments": empty,
            "inventory": empty,
            "notifications": empty,
            "recommendations": empty,
        }
    )


def test_a_caller_that_gives_up_before_its_callee_is_reported():
    """orders may spend 2.5 + 4 + 2.5 = 9 s on its calls; the gateway waits 0.5 + 8 = 8.5 s."""
    [problem] = graph(gateway_orders_read=8.0).problems()
    assert (problem.caller, problem.callee) == ("gateway", "orders")
    assert "after 8.5 s" in problem.message and "9 s" in problem.message
    assert graph(gateway_orders_read=8.5).problems() == []


def test_retry_amplification_multiplies_along_the_path():
    amplification = dict(
        (" -> ".join(path), n) for path, n in graph(9.0, gateway_orders_attempts=2).amplification()
    )
    assert amplification == {
        "gateway -> orders": 2,
        "gateway -> orders -> inventory": 4,
        "gateway -> orders -> payments": 6,
    }


def test_the_command_fails_on_a_problem(monkeypatch):
    monkeypatch.setattr(
        Graph, "from_settings_modules", classmethod(lambda cls: graph(gateway_orders_read=1.0))
    )
    with pytest.raises(CommandError, match=r"gateway gives up on an attempt after 1\.5 s"):
        call_command("budgets", stdout=StringIO())


def test_a_placing_lease_shorter_than_a_placing_request_is_reported():
    """A replay (or the worker) would take over an order its request is still placing."""
    g = graph(gateway_orders_read=9.0)
    assert g.problems() == []
    g.settings["orders"].ORDERS_SAFETY_NET_DELAY = 5
    g.settings["orders"].ORDERS_PENDING_MAX_AGE = 300
    [problem] = g.problems()
    assert "ORDERS_SAFETY_NET_DELAY is 5 s" in problem.message and "9 s" in problem.message
    g.settings["orders"].ORDERS_SAFETY_NET_DELAY = 9
    g.settings["orders"].ORDERS_PENDING_MAX_AGE = 8
    [problem] = g.problems()
    assert "ORDERS_PENDING_MAX_AGE (8 s)" in problem.message
