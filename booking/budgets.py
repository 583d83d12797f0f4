"""Timeout budgets across the service graph, from the settings of every service.

For every call a service makes, the caller's attempt timeout (``CONNECT + READ``) must cover
the callee's own worst case: the sum of the deadlines of the calls the callee makes in
sequence for its slowest endpoint (each call's ``DEADLINE``, which a wait for a bulkhead slot
counts inside). When it does not, the caller gives up while the callee
is still working: the bug behind Istio's well-known productpage/reviews timeouts. (Here the
deadline header limits the damage at run time: the callee learns when the attempt ends.)
Retry amplification multiplies ``MAX_ATTEMPTS`` along each path from the entry point.
"""

import importlib
from dataclasses import dataclass

from resilience import conf

ENTRY = "gateway"
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")


@dataclass(frozen=True)
class Edge:
    caller: str
    callee: str
    attempt: float
    deadline: float
    attempts: int

    @property
    def worst(self) -> float:
        """The longest the caller can spend on this call: its deadline (a wait for a bulkhead
        slot counts inside it)."""
        return self.deadline


@dataclass(frozen=True)
class Problem:
    caller: str
    callee: str
    message: str


class Graph:
    def __init__(self, settings_by_service: dict[str, object]) -> None:
        self.settings = settings_by_service

    @classmethod
    def from_settings_modules(cls) -> "Graph":
        return cls({s: importlib.import_module(f"booking.settings.{s}") for s in SERVICES})

    def policy(self, service: str, name: str) -> conf.PolicyConfig:
        return conf.build_config(name, getattr(self.settings[service], "RESILIENCE_POLICIES", {}))

    def paths(self, service: str) -> dict[str, list[str]]:
        return getattr(self.settings[service], "CALL_PATHS", {})

    def edge(self, caller: str, callee: str) -> Edge:
        policy = self.policy(caller, callee)
        return Edge(
            caller,
            callee,
            policy.timeout.connect + policy.timeout.read,
            policy.deadline,
            policy.retry.max_attempts if policy.enabled else 1,
        )

    def worst_case(self, service: str) -> float:
        """Seconds the slowest endpoint of ``service`` may spend on its calls to others."""
        return max(
            (
                sum(self.edge(service, callee).worst for callee in calls)
                for calls in self.paths(service).values()
            ),
            default=0.0,
        )

    def problems(self) -> list[Problem]:
        found = self.lifetime_problems()
        for caller in SERVICES:
            for callee in sorted({c for calls in self.paths(caller).values() for c in calls}):
                edge, worst = self.edge(caller, callee), self.worst_case(callee)
                if edge.attempt < worst:
                    found.append(
                        Problem(
                            caller,
                            callee,
                            f"{caller} gives up on an attempt after {edge.attempt:g} s, but {callee} may work "
                            f"{worst:g} s on its calls: raise {caller}'s TIMEOUT for {callee!r} or lower "
                            f"{callee}'s deadlines.",
                        )
                    )
        return found

    def lifetime_problems(self) -> list[Problem]:
        """The orders service's leases against the time a request placing an order may take."""
        orders = self.settings.get("orders")
        lease = getattr(orders, "ORDERS_SAFETY_NET_DELAY", None)
        abandon = getattr(orders, "ORDERS_PENDING_MAX_AGE", None)
        if lease is None:
            return []
        found = []
        worst = self.worst_case("orders")
        if lease < worst:
            found.append(
                Problem(
                    "orders",
                    "orders",
                    f"ORDERS_SAFETY_NET_DELAY is {lease:g} s, but a request placing an order may "
                    f"work {worst:g} s on its calls: a replay (or the worker) would take over an "
                    "order its request is still placing. Raise it.",
                )
            )
        if abandon is not None and abandon < lease:
            found.append(
                Problem(
                    "orders",
                    "orders",
                    f"ORDERS_PENDING_MAX_AGE ({abandon:g} s) is shorter than "
                    f"ORDERS_SAFETY_NET_DELAY ({lease:g} s): the worker would fail orders that "
                    "a replay may still place.",
                )
            )
        return found

    def amplification(self) -> list[tuple[list[str], int]]:
        """Every path from the entry point, with the attempts its last service may receive per call."""
        results = []

        def walk(path: list[str], factor: int) -> None:
            callees = sorted({c for calls in self.paths(path[-1]).values() for c in calls})
            for callee in callees:
                attempts = factor * self.edge(path[-1], callee).attempts
                results.append(([*path, callee], attempts))
                if callee not in path:
                    walk([*path, callee], attempts)

        walk([ENTRY], 1)
        return results
