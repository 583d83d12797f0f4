"""The services and the calls between them, read from every service's own settings."""

import functools
import importlib

# The services the control room watches, in the order the page draws them.
SERVICES = ("gateway", "orders", "payments", "inventory", "notifications", "recommendations")
# Programs of the local stack besides the services: watched, stopped and started too.
PROGRAMS = (*SERVICES, "orders-worker", "inventory-sweeper")


@functools.cache
def edges() -> tuple[tuple[str, str], ...]:
    """(caller, callee) for every dependency a service declares (SERVICE_DEPENDENCIES)."""
    found = []
    for caller in SERVICES:
        module = importlib.import_module(f"booking.settings.{caller}")
        for callee in getattr(module, "SERVICE_DEPENDENCIES", []):
            found.append((caller, callee))
    return tuple(found)
