"""What ``/health/`` reports about the resilience policies of this process."""

from resilience import policies


def breaker_states(names=None) -> dict[str, dict]:
    """The breakers of ``names`` (default: every configured policy), as this process sees them."""
    report = {}
    chosen = policies.all() if names is None else [policies[name] for name in names]
    for policy in chosen:
        breaker = policy.breaker
        state, mode, _ = breaker.state.view
        entry = {
            "state": state,
            "mode": mode,
            "enabled": policy.enabled,
            "bulkhead_available": policy.bulkhead.available,
            "storage": breaker.state.describe(),
        }
        if breaker.state.shared:
            entry["storage_reachable"] = breaker.state.link.up
        report[policy.name] = entry
    return report
