"""The breaker against a reference model, on random sequences of outcomes and waits (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import conf
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from resilience.exceptions import BusinessError, CircuitOpenError

CONFIG = {
    "FAILURE_RATE_THRESHOLD": 50,
    "SLOW_CALL_RATE_THRESHOLD": 60,
    "SLOW_CALL_DURATION": 1.0,
    "SLIDING_WINDOW_SIZE": 6,
    "MINIMUM_NUMBER_OF_CALLS": 4,
    "WAIT_DURATION_IN_OPEN_STATE": 10.0,
    "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
}


class Model:
    """The intended behaviour, written as plainly as possible for sequential calls."""

    def __init__(self) -> None:
        self.state = "closed"
        self.window: list[tuple[bool, bool]] = []
        self.trials: list[tuple[bool, bool]] = []
        self.opened_at = 0.0

    def _trips(self, outcomes) -> bool:
        n = len(outcomes)
        failures = 100 * sum(f for f, _ in outcomes) / n
        slow = 100 * sum(s for _, s in outcomes) / n
        return (
            failures >= CONFIG["FAILURE_RATE_THRESHOLD"]
            or slow >= CONFIG["SLOW_CALL_RATE_THRESHOLD"]
        )

    def call(self, outcome: str, now: float) -> str:
        if self.state == "open":
            if now - self.opened_at < CONFIG["WAIT_DURATION_IN_OPEN_STATE"]:
                return "rejected"
            self.state, self.trials = "half-open", []
        if outcome == "ignored":
            return "ran"
        record = (outcome in ("fail", "slow_fail"), outcome.startswith("slow"))
        if self.state == "closed":
            self.window = [*self.window, record][-CONFIG["SLIDING_WINDOW_SIZE"] :]
            if len(self.window) >= CONFIG["MINIMUM_NUMBER_OF_CALLS"] and self._trips(self.window):
                self.state, self.opened_at, self.window = "open", now, []
        else:
            self.trials.append(record)
            if len(self.trials) == CONFIG["PERMITTED_CALLS_IN_HALF_OPEN_STATE"]:
                if self._trips(self.trials):
                    self.state, self.opened_at = "open", now
                else:
                    self.state = "closed"
                self.window = []
        return "ran"


class Failure(Exception):
    pass


steps = st.lists(
    st.one_of(
        st.sampled_from(["ok", "fail", "slow_ok", "slow_fail", "ignored"]),
        st.floats(min_value=0.5, max_value=15.0).map(lambda s: ("wait", s)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_breaker_matches_the_reference_model(sequence):
    clock = VirtualClock()
    config = conf.build_config("model", {"model": {"CIRCUIT_BREAKER": CONFIG}}).circuit_breaker
    breaker = CircuitBreaker("model", config, clock=clock)
    model = Model()

    for step in sequence:
        if isinstance(step, tuple):
            clock.advance(step[1])
            continue
        now_before = clock.now()

        def work(outcome=step):
            if outcome.startswith("slow"):
                clock.advance(1.5)
            if outcome in ("fail", "slow_fail"):
                raise Failure()
            if outcome == "ignored":
                raise BusinessError()
            return "ran"

        expected = model.call(step, now_before)
        # The model decides at the moment the slow call ends; give it the same clock.
        if model.state == "open" and expected == "ran":
            model.opened_at = clock.now() + (1.5 if step.startswith("slow") else 0.0)
        try:
            breaker.call(work)
            actual = "ran"
        except CircuitOpenError:
            actual = "rejected"
        except (Failure, BusinessError):
            actual = "ran"
        assert (actual, breaker.current_state) == (expected, model.state), (step, sequence)
