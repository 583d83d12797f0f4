import pytest

from resilience import policies

# Fast, explicit settings for tests; each test overrides what it is about.
TEST_DEFAULT = {
    "TIMEOUT": {"CONNECT": 0.5, "READ": 1.0},
    "DEADLINE": 3.0,
    "RETRY": {"MAX_ATTEMPTS": 3, "BACKOFF_INITIAL": 0.05, "BACKOFF_MAX": 0.2},
    "CIRCUIT_BREAKER": {
        "SLIDING_WINDOW_SIZE": 10,
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 30.0,
        "STORAGE": None,
    },
    "BULKHEAD": {"MAX_CONCURRENT_CALLS": 10, "MAX_WAIT": 0.0},
}


@pytest.fixture
def make_policy(settings, upstream):
    """Configure policy ``name`` (pointing at the test upstream) from section overrides; return it."""

    def make(name: str = "upstream", **overrides):
        settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, name: upstream.url}
        settings.RESILIENCE_POLICIES = {"default": TEST_DEFAULT, name: overrides}
        return policies[name]

    return make
