"""Resilience between services: named policies of bulkhead, deadline, retry, circuit breaker and timeout.

from resilience import policies
policies["payments"].call(fn, *args, fallback=...)
"""

from resilience.handler import PolicyHandler

policies = PolicyHandler()

__all__ = ["policies"]
