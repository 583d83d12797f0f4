"""What ``/health/`` reports about the resilience policies of this process."""

from resilience import policies


def breaker_states(names=None) -> dict[str, dict]:
    """The breakers of ``names`` (default: every configured policy): state, mode, enabled."""
    report = {}
    chosen = policies.all() if names is None else [policies[name] for name in names]
    for policy in chosen:
        breaker = policy.breaker
        state, mode, _ = breaker.storage.snapshot()
        report[policy.name] = {
            "state": state,
            "mode": mode,
            "enabled": policy.enabled,
            "bulkhead_available": policy.bulkhead.available,
            "storage": "redis" if policy.config.circuit_breaker.storage else "memory",
        }
    return report
