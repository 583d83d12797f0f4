"""Test support: reset every policy between tests and run without real sleeps.

    from resilience import testing

    def test_something():
        with testing.virtual_time() as clock:
            ...                 # backoffs return at once; clock.advance(30) ends an open wait
        testing.reset()         # every built policy closed, empty, with a full retry budget

Real I/O still takes real time under ``virtual_time``: only waiting is skipped.
"""

import contextlib
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from resilience import metrics, policies
from resilience.clock import Clock, VirtualClock, clock


def reset() -> None:
    """Reset the state of every policy built so far in this process."""
    for policy in policies.all(initialized_only=True):
        policy.reset()


def reset_metrics() -> None:
    """Forget every sample of the resilience metrics in this process.

    Policies bind their metric children when built, so they are dropped too and rebuilt on
    next use.
    """
    metrics.forget()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            value.clear()
    policies.reset()


def set_testing(enabled: bool) -> VirtualClock | None:
    """Switch every policy of the process to virtual time (``True``) or back to real time."""
    if enabled:
        clock.target = VirtualClock()
        return clock.target
    clock.target = Clock()
    return None


@contextlib.contextmanager
def virtual_time() -> Iterator[VirtualClock]:
    previous = clock.target
    virtual = VirtualClock()
    clock.target = virtual
    try:
        yield virtual
    finally:
        clock.target = previous


def metric(metric_name: str, /, **labels: str) -> float:
    """The current value of a metric sample in this process (0.0 when it was never set),
    after adding every count not yet flushed."""
    metrics.flush()
    return REGISTRY.get_sample_value(metric_name, labels) or 0.0
