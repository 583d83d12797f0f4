"""The circuit breaker: concurrent calls, rate-based tripping, exact half-open trials, ignored outcomes."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience import conf, testing
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from resilience.exceptions import BusinessError, CircuitOpenError, UpstreamStatusError
from resilience.http import ServiceClient


class Boom(Exception):
    pass


def make_breaker(name="b", clock=None, **overrides) -> CircuitBreaker:
    config = conf.build_config(name, {name: {"CIRCUIT_BREAKER": overrides}})
    return CircuitBreaker(name, config.circuit_breaker, clock=clock or VirtualClock())


def ok():
    return "ok"


def fail():
    raise Boom()


def run(breaker, outcome):
    try:
        return breaker.call(ok if outcome == "S" else fail)
    except (Boom, CircuitOpenError) as exc:
        return exc


def test_calls_through_a_closed_breaker_run_concurrently():
    """50 calls meet at a barrier inside the guarded function: impossible if the breaker
    held a lock around the call (pybreaker's does; see docs/benchmarks.md for the wall time)."""
    breaker = make_breaker()
    inside = threading.Barrier(50, timeout=10)

    def work():
        inside.wait()  # BrokenBarrierError unless all 50 are inside at once
        time.sleep(0.1)
        return True

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: breaker.call(work), range(50)))
    assert results == [True] * 50
    assert breaker.current_state == "closed"


def test_sixty_percent_interleaved_failures_open_the_breaker():
    """Never more than two failures in a row, 6 of 10 failed: the failure rate trips it on call 10."""
    breaker = make_breaker(
        SLIDING_WINDOW_SIZE=10, MINIMUM_NUMBER_OF_CALLS=10, FAILURE_RATE_THRESHOLD=50
    )
    pattern = "FFSFFSFFSS"
    assert "FFF" not in pattern and pattern.count("F") == 6
    for i, outcome in enumerate(pattern, 1):
        run(breaker, outcome)
        expected = "open" if i == 10 else "closed"
        assert breaker.current_state == expected, f"after call {i}"
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)


def test_below_the_minimum_number_of_calls_nothing_trips():
    breaker = make_breaker(SLIDING_WINDOW_SIZE=10, MINIMUM_NUMBER_OF_CALLS=5)
    for _ in range(4):
        run(breaker, "F")
    assert breaker.current_state == "closed"
    run(breaker, "F")
    assert breaker.current_state == "open"


def test_the_window_slides_old_failures_out():
    breaker = make_breaker(
        SLIDING_WINDOW_SIZE=4, MINIMUM_NUMBER_OF_CALLS=4, FAILURE_RATE_THRESHOLD=50
    )
    for outcome in "FSSSFSSSFSSS":
        run(breaker, outcome)
    assert breaker.current_state == "closed"  # one failure in every 4 calls: 25%
    run(breaker, "F")
    assert breaker.current_state == "closed"  # last 4: S S S F
    run(breaker, "F")
    assert breaker.current_state == "open"  # last 4: S S F F, 50%


def test_slow_calls_trip_the_breaker():
    clock = VirtualClock()
    breaker = make_breaker(
        clock=clock, SLOW_CALL_DURATION=1.0, SLOW_CALL_RATE_THRESHOLD=60, MINIMUM_NUMBER_OF_CALLS=5
    )

    def slow():
        clock.advance(1.5)
        return "late"

    for _ in range(2):
        breaker.call(ok)
    for _ in range(3):
        assert breaker.call(slow) == "late"
    assert breaker.current_state == "open"


def trip(breaker):
    for _ in range(breaker.config.minimum_number_of_calls):
        run(breaker, "F")
    assert breaker.current_state == "open"


def test_open_rejects_until_the_wait_is_over_by_the_injected_clock():
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, WAIT_DURATION_IN_OPEN_STATE=30)
    trip(breaker)
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(0.2)
    assert breaker.call(ok) == "ok"
    assert breaker.current_state == "half-open"


def test_half_open_admits_exactly_the_permitted_trials_and_closes_after_they_succeed(
    upstream, settings, resilience_test_mode
):
    """20 concurrent callers after the open wait: 3 reach the server, 17 are rejected, then closed."""
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "svc": upstream.url}
    settings.RESILIENCE_POLICIES = {
        "svc": {
            "RETRY": {"MAX_ATTEMPTS": 1},
            "BULKHEAD": {"MAX_CONCURRENT_CALLS": 50},
            "CIRCUIT_BREAKER": {
                "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
                "MINIMUM_NUMBER_OF_CALLS": 5,
                "WAIT_DURATION_IN_OPEN_STATE": 30,
            },
        }
    }
    client = ServiceClient("svc")
    policy = client.policy
    upstream.script([503] * 5)
    for _ in range(5):
        with pytest.raises(UpstreamStatusError):
            client.get("/script")
    assert policy.breaker.current_state == "open"
    upstream.reset()

    resilience_test_mode.advance(31)
    barrier = threading.Barrier(20)

    def caller(_):
        barrier.wait()
        try:
            return client.get("/delay/0.2").status_code
        except CircuitOpenError:
            return "rejected"

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(caller, range(20)))
    assert upstream.count("/delay") == 3
    assert outcomes.count(200) == 3
    assert outcomes.count("rejected") == 17
    assert policy.breaker.current_state == "closed"


def test_a_failed_trial_opens_the_breaker_again():
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=3)
    trip(breaker)
    clock.advance(31)
    for outcome in "SFF":
        run(breaker, outcome)
    assert breaker.current_state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)


def test_half_open_decides_on_the_trials_failure_rate():
    clock = VirtualClock()
    breaker = make_breaker(
        clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=3, FAILURE_RATE_THRESHOLD=50
    )
    trip(breaker)
    clock.advance(31)
    for outcome in "SFS":  # 33% failed: under the threshold
        run(breaker, outcome)
    assert breaker.current_state == "closed"


def test_ignored_outcomes_count_neither_way_and_never_close_a_half_open_breaker():
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=2)

    def declined():
        raise BusinessError("card declined")

    for _ in range(20):
        with pytest.raises(BusinessError):
            breaker.call(declined)
    assert breaker.current_state == "closed"
    trip(breaker)
    clock.advance(31)
    for _ in range(5):  # more ignored trials than permits: each one gives its permit back
        with pytest.raises(BusinessError):
            breaker.call(declined)
    assert breaker.current_state == "half-open"
    breaker.call(ok)
    assert breaker.current_state == "half-open"
    breaker.call(ok)
    assert breaker.current_state == "closed"


def test_configured_ignored_exceptions_are_not_failures():
    breaker = make_breaker(IGNORE_EXCEPTIONS=[KeyError])
    for _ in range(10):
        with pytest.raises(KeyError):
            breaker.call(lambda: {}["missing"])
    assert breaker.current_state == "closed"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_pass_through_uncounted(exc_type):
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=1)

    def interrupted():
        raise exc_type()

    for _ in range(10):
        with pytest.raises(exc_type):
            breaker.call(interrupted)
    assert breaker.current_state == "closed"
    trip(breaker)
    clock.advance(31)
    with pytest.raises(exc_type):
        breaker.call(interrupted)
    assert breaker.call(ok) == "ok"  # the interrupted trial gave its permit back
    assert breaker.current_state == "closed"


def test_force_open_rejects_even_after_the_wait():
    clock = VirtualClock()
    breaker = make_breaker(clock=clock)
    breaker.force_open()
    clock.advance(1000)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert (breaker.current_state, breaker.mode) == ("open", "forced-open")
    breaker.force_closed()
    assert breaker.call(ok) == "ok"
    assert (breaker.current_state, breaker.mode) == ("closed", "normal")


def test_disabled_breaker_lets_everything_through_and_counts_nothing():
    breaker = make_breaker()
    breaker.disable()
    for _ in range(20):
        run(breaker, "F")
    assert breaker.current_state == "closed"
    assert breaker.call(ok) == "ok"
    breaker.force_closed()
    trip(breaker)


def test_transitions_are_logged_at_warning_with_the_policy_name(caplog):
    clock = VirtualClock()
    breaker = make_breaker(name="payments", clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=1)
    with caplog.at_level(logging.WARNING, logger="resilience.breaker"):
        trip(breaker)
        clock.advance(31)
        breaker.call(ok)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages[0].startswith("circuit breaker 'payments': closed -> open (failure rate 100%")
    assert "'payments': open -> half-open" in messages[1]
    assert "'payments': half-open -> closed" in messages[2]


def test_metrics_follow_the_breaker():
    clock = VirtualClock()
    breaker = make_breaker(name="metered", clock=clock)
    before = testing.metric(
        "resilience_circuitbreaker_transitions_total",
        name="metered",
        from_state="closed",
        to_state="open",
    )
    trip(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert testing.metric("resilience_circuitbreaker_state", name="metered", state="open") == 1
    assert testing.metric("resilience_circuitbreaker_state", name="metered", state="closed") == 0
    assert (
        testing.metric(
            "resilience_circuitbreaker_transitions_total",
            name="metered",
            from_state="closed",
            to_state="open",
        )
        == before + 1
    )
    assert (
        testing.metric(
            "resilience_circuitbreaker_calls_total", name="metered", kind="not_permitted"
        )
        >= 1
    )


def test_a_listener_hears_every_state_change():
    seen = []
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=1)
    breaker.add_listener(lambda cb, old, new: seen.append((cb.name, old, new)))
    trip(breaker)
    clock.advance(31)
    breaker.call(ok)
    assert seen == [
        ("b", "closed", "open"),
        ("b", "open", "half-open"),
        ("b", "half-open", "closed"),
    ]


def test_an_open_breaker_answers_with_status_errors_counted_once_each(make_policy, upstream):
    """Only 5xx count as failures: the breaker opens after MINIMUM_NUMBER_OF_CALLS 503s."""
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 1}, CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5})
    client = ServiceClient("upstream")
    for _ in range(5):
        with pytest.raises(UpstreamStatusError):
            client.get("/status/503")
    with pytest.raises(CircuitOpenError):
        client.get("/status/503")
    assert upstream.count("/status") == 5
    assert policy.breaker.current_state == "open"


def test_a_4xx_answer_is_ignored_by_the_breaker(make_policy, upstream, resilience_test_mode):
    """404s count neither way: not as failures, and not as successes that could close a half-open breaker."""
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 1},
        CIRCUIT_BREAKER={"MINIMUM_NUMBER_OF_CALLS": 5, "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3},
    )
    client = ServiceClient("upstream")
    for _ in range(10):
        assert client.get("/status/404").status_code == 404
    assert policy.breaker.current_state == "closed"
    for kind, expected in [("failed", 0), ("successful", 0), ("ignored", 10)]:
        assert (
            testing.metric("resilience_circuitbreaker_calls_total", name="upstream", kind=kind)
            == expected
        )
    for _ in range(5):
        with pytest.raises(UpstreamStatusError):
            client.get("/status/503")
    resilience_test_mode.advance(31)
    for _ in range(5):
        assert client.get("/status/404").status_code == 404
    assert policy.breaker.current_state == "half-open"
    for _ in range(3):
        client.get("/ok")
    assert policy.breaker.current_state == "closed"


def test_trials_that_never_report_back_do_not_wedge_half_open():
    """A process that dies holding trial permits: after another open wait, a new round starts."""
    clock = VirtualClock()
    breaker = make_breaker(
        clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=2, WAIT_DURATION_IN_OPEN_STATE=30
    )
    trip(breaker)
    clock.advance(31)
    lost = [breaker.acquire(), breaker.acquire()]  # taken and never recorded
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(31)
    assert breaker.call(ok) == "ok"
    assert breaker.call(ok) == "ok"
    assert breaker.current_state == "closed"
    for permit in lost:  # late news from the dead round changes nothing
        breaker.record(permit, "failure", 0.0)
    assert breaker.current_state == "closed"


def test_outcomes_from_an_earlier_state_period_are_dropped():
    """Calls admitted while closed that end after open -> half-open -> closed do not count."""
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=1)
    early = [breaker.acquire() for _ in range(5)]
    trip(breaker)
    clock.advance(31)
    breaker.call(ok)
    assert breaker.current_state == "closed"
    for permit in early:
        breaker.record(permit, "failure", 0.0)
    assert breaker.current_state == "closed"


def test_a_stale_trial_release_does_not_admit_an_extra_trial():
    clock = VirtualClock()
    breaker = make_breaker(clock=clock, PERMITTED_CALLS_IN_HALF_OPEN_STATE=1)
    trip(breaker)
    clock.advance(31)
    first_round = breaker.acquire()
    clock.advance(31)  # the first round's trial never reported: a new round starts
    second_round = breaker.acquire()
    breaker.release(first_round)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    breaker.record(second_round, "success", 0.0)
    assert breaker.current_state == "closed"


def test_rate_gauges_read_minus_one_until_the_minimum_number_of_calls():
    breaker = make_breaker(name="gauged", MINIMUM_NUMBER_OF_CALLS=5)
    for _ in range(4):
        breaker.call(ok)
    assert testing.metric("resilience_circuitbreaker_failure_rate", name="gauged") == -1
    breaker.call(ok)
    assert testing.metric("resilience_circuitbreaker_failure_rate", name="gauged") == 0


def test_forcing_an_open_breaker_open_again_is_no_transition():
    breaker = make_breaker(name="forced")
    breaker.force_open()
    breaker.force_open()
    transitions = "resilience_circuitbreaker_transitions_total"
    assert testing.metric(transitions, name="forced", from_state="closed", to_state="open") == 1
    assert testing.metric(transitions, name="forced", from_state="open", to_state="open") == 0
