"""What ``/health/`` reports about the resilience policies of this process."""

from resilience import policies


def breaker_states() -> dict[str, dict]:
    """Every configured policy's breaker: state, mode, and whether the policy is enabled at all."""
    report = {}
    for policy in policies.all():
        breaker = policy.breaker
        state, mode = breaker.storage.snapshot()
        report[policy.name] = {
            "state": state,
            "mode": mode,
            "enabled": policy.enabled,
            "bulkhead_available": policy.bulkhead.available,
            "storage": "redis" if policy.config.circuit_breaker.storage else "memory",
        }
    return report
