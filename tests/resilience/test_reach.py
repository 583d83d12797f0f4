"""What resilience4j and Polly offer, the Django way: a rate limiter, a time-based window,
predicates on results, signals, a decorator, and ``idempotent`` said at every call."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core import checks

import resilience
from resilience import conf, signals, testing
from resilience.breaker import CircuitBreaker
from resilience.clock import VirtualClock
from resilience.conf import RateLimiterConfig
from resilience.exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceededError,
    RateLimitedError,
)
from resilience.ratelimiter import RateLimiter


def limiter(limit=3, period=1.0, timeout=0.0, clock=None) -> RateLimiter:
    config = RateLimiterConfig(
        limit_for_period=limit, limit_refresh_period=period, timeout_duration=timeout
    )
    return RateLimiter("limited", config, clock=clock or VirtualClock())


# -- the rate limiter ---------------------------------------------------------------------------


def fresh_cycle(clock, period: float, *parts) -> None:
    """Move ``clock`` just past the start of a cycle of ``period``, and refill ``parts``."""
    clock.advance(period - clock.now() % period + 0.001)
    for part in parts:
        part.reset()


def test_a_rate_limiter_by_itself_gives_its_permits_per_period_and_refuses_the_rest():
    clock = VirtualClock()
    rate = limiter(limit=3, period=1.0, clock=clock)
    fresh_cycle(clock, 1.0, rate)
    for _ in range(3):
        rate.acquire()
    with pytest.raises(RateLimitedError, match="3 per 1 s"):
        rate.acquire()
    assert rate.available == 0
    clock.advance(1.0)
    assert rate.available == 3  # unused permits do not carry over, and the period refills
    rate.acquire()
    assert (
        testing.metric("resilience_ratelimiter_calls_total", name="limited", kind="permitted") == 4
    )
    assert (
        testing.metric("resilience_ratelimiter_calls_total", name="limited", kind="rejected") == 1
    )
    assert testing.metric("resilience_ratelimiter_available_permissions", name="limited") == 2


def test_waiting_callers_reserve_later_cycles_in_order_and_the_rate_holds():
    rate = limiter(limit=2, period=1.0, timeout=5.0)
    now = rate._cycle * 1.0 + 0.25  # a quarter into the current cycle
    waits = [rate.reserve_locked(now, 5.0) for _ in range(7)]
    assert waits == pytest.approx([0, 0, 0.75, 0.75, 1.75, 1.75, 2.75])
    assert rate.reserve_locked(now, 3.0) == pytest.approx(2.75)  # the second of that cycle
    assert rate.reserve_locked(now, 3.0) is None  # the next is 3.75 s away
    # The debts are paid first: a cycle later, the permits of that cycle are already taken.
    assert rate.reserve_locked(now + 1.0, 0.0) is None


def test_threads_never_get_more_than_the_limit_per_cycle():
    clock = VirtualClock()
    rate = limiter(limit=50, period=10.0, clock=clock)
    fresh_cycle(clock, 10.0, rate)
    granted = []

    def take():
        try:
            rate.acquire()
            granted.append(1)
        except RateLimitedError:
            pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(400):
            pool.submit(take)
    assert len(granted) == 50


def test_in_a_policy_every_attempt_takes_a_permit_and_a_refusal_falls_back(
    make_policy, resilience_test_mode
):
    policy = make_policy(
        RATE_LIMITER={"LIMIT_FOR_PERIOD": 3, "LIMIT_REFRESH_PERIOD": 60.0},
        RETRY={"MAX_ATTEMPTS": 3, "RETRY_ON_EXCEPTIONS": [ConnectionError]},
    )
    fresh_cycle(resilience_test_mode, 60.0, policy.rate_limiter)
    ran = []

    def flaky():
        ran.append(1)
        if len(ran) == 1:
            raise ConnectionError("once")
        return "ok"

    assert policy.call(flaky, idempotent=True) == "ok"  # two attempts: two permits
    assert policy.call(lambda: ran.append(2) or "ok", idempotent=True) == "ok"
    with pytest.raises(RateLimitedError):
        policy.call(lambda: ran.append(3), idempotent=True)
    assert ran == [1, 1, 2]  # the refused attempt never ran
    received = []
    assert policy.call(lambda: "never", idempotent=True, fallback=received.append) is None
    assert isinstance(received[0], RateLimitedError)
    assert (
        testing.metric("resilience_fallback_calls_total", name="upstream", reason="rate_limited")
        == 1
    )
    assert (
        testing.metric("resilience_ratelimiter_calls_total", name="upstream", kind="rejected") == 2
    )
    # A refusal is not the dependency's failure.
    assert (
        testing.metric("resilience_circuitbreaker_calls_total", name="upstream", kind="failed") == 1
    )


def test_a_policy_waits_for_a_permit_only_within_its_deadline(make_policy, resilience_test_mode):
    clock = resilience_test_mode
    policy = make_policy(
        DEADLINE=2.0,
        RATE_LIMITER={"LIMIT_FOR_PERIOD": 1, "LIMIT_REFRESH_PERIOD": 5.0, "TIMEOUT_DURATION": 30.0},
    )
    fresh_cycle(clock, 5.0, policy.rate_limiter)
    clock.advance(0.5)
    assert policy.call(lambda: "first", idempotent=True) == "first"
    with pytest.raises(RateLimitedError):  # the next permit is 4.5 s away, past the 2 s deadline
        policy.call(lambda: "never", idempotent=True)
    policy2 = make_policy(
        "waits",
        DEADLINE=10.0,
        RATE_LIMITER={"LIMIT_FOR_PERIOD": 1, "LIMIT_REFRESH_PERIOD": 5.0, "TIMEOUT_DURATION": 30.0},
    )
    fresh_cycle(clock, 5.0, policy2.rate_limiter)
    policy2.call(lambda: "first", idempotent=True)
    before = len(clock.sleeps)
    assert policy2.call(lambda: "second", idempotent=True) == "second"
    assert 0 < clock.sleeps[before] <= 5.0  # it waited for the next cycle, inside its deadline


def test_a_wait_for_a_permit_is_not_counted_as_a_slow_call(make_policy, resilience_test_mode):
    policy = make_policy(
        DEADLINE=10.0,
        CIRCUIT_BREAKER={"SLOW_CALL_DURATION": 1.0, "MINIMUM_NUMBER_OF_CALLS": 2},
        RATE_LIMITER={"LIMIT_FOR_PERIOD": 1, "LIMIT_REFRESH_PERIOD": 3.0, "TIMEOUT_DURATION": 5.0},
    )
    fresh_cycle(resilience_test_mode, 3.0, policy.rate_limiter)
    for _ in range(4):
        policy.call(lambda: "ok", idempotent=True)
    assert len(resilience_test_mode.sleeps) == 3
    assert (
        testing.metric(
            "resilience_circuitbreaker_calls_total", name="upstream", kind="slow_successful"
        )
        == 0
    )


# -- a time-based sliding window ------------------------------------------------------------------


def make_breaker(clock, **overrides) -> CircuitBreaker:
    config = conf.build_config("b", {"b": {"CIRCUIT_BREAKER": overrides}})
    return CircuitBreaker("b", config.circuit_breaker, clock=clock)


def fail():
    raise ConnectionError("down")


def test_a_time_based_window_judges_the_calls_of_the_last_seconds():
    clock = VirtualClock()
    timed = make_breaker(
        clock, SLIDING_WINDOW_TYPE="TIME_BASED", SLIDING_WINDOW_SIZE=10, MINIMUM_NUMBER_OF_CALLS=5
    )
    counted = make_breaker(clock, SLIDING_WINDOW_SIZE=10, MINIMUM_NUMBER_OF_CALLS=5)
    for _ in range(5):  # one failure every 3 s: at most 4 in any 10 s
        for breaker in (timed, counted):
            with pytest.raises(ConnectionError):
                breaker.call(fail)
        clock.advance(3.0)
    assert counted.current_state == "open"  # five failed calls, however spread
    assert timed.current_state == "closed"
    assert timed.window.rates(timed.state.view[2])[0] == 3  # the others left the window
    for _ in range(2):  # two more at once: five in the last 10 s
        with pytest.raises(ConnectionError):
            timed.call(fail)
    assert timed.current_state == "open"


def test_a_time_based_window_forgets_a_quiet_past():
    clock = VirtualClock()
    timed = make_breaker(
        clock, SLIDING_WINDOW_TYPE="TIME_BASED", SLIDING_WINDOW_SIZE=5, MINIMUM_NUMBER_OF_CALLS=3
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            timed.call(fail)
    clock.advance(60.0)
    for _ in range(3):
        timed.call(lambda: "ok")
    assert timed.window.rates(timed.state.view[2]) == (3, 0.0, 0.0)
    with pytest.raises(ConnectionError):
        timed.call(fail)
    assert timed.current_state == "closed"  # 1 of 4 failed


# -- predicates on results --------------------------------------------------------------------


def is_busy(result) -> bool:
    return result == "busy"


def test_retry_on_result_retries_an_answer_worth_another_attempt(make_policy):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 3, "RETRY_ON_RESULT": "tests.resilience.test_reach.is_busy"}
    )
    answers = iter(["busy", "busy", "ready"])
    assert policy.call(lambda: next(answers), idempotent=True) == "ready"
    assert testing.metric("resilience_retry_attempts_total", name="upstream") == 2
    always = iter(["busy"] * 5)
    assert policy.call(lambda: next(always), idempotent=True) == "busy"  # the last answer
    assert policy.call(lambda: next(always), idempotent=False) == "busy"  # one attempt only
    assert len(list(always)) == 1


def test_record_failure_on_result_opens_the_breaker_on_answers(make_policy):
    policy = make_policy(
        CIRCUIT_BREAKER={
            "MINIMUM_NUMBER_OF_CALLS": 3,
            "RECORD_FAILURE_ON_RESULT": "tests.resilience.test_reach.is_busy",
        }
    )
    for _ in range(3):
        assert policy.call(lambda: "busy", idempotent=True) == "busy"
    assert policy.breaker.current_state == "open"
    with pytest.raises(CircuitOpenError):
        policy.call(lambda: "never", idempotent=True)


# -- signals ------------------------------------------------------------------------------------


@pytest.fixture
def received():
    seen = []

    def receiver(signal_name):
        def receive(sender, **kwargs):
            seen.append((signal_name, kwargs["policy"], kwargs.get("reason"), kwargs))

        return receive

    receivers = {name: receiver(name) for name in ("retry", "rejected", "fallback")}
    for name, fn in receivers.items():
        getattr(signals, name).connect(fn)
    yield seen
    for name, fn in receivers.items():
        getattr(signals, name).disconnect(fn)


def test_signals_tell_a_host_project_of_retries_rejections_and_fallbacks(
    make_policy, received, resilience_test_mode
):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 2, "RETRY_ON_EXCEPTIONS": [ConnectionError]},
        BULKHEAD={"MAX_CONCURRENT_CALLS": 1},
        RATE_LIMITER={"LIMIT_FOR_PERIOD": 4, "LIMIT_REFRESH_PERIOD": 60.0},
    )
    fresh_cycle(resilience_test_mode, 60.0, policy.rate_limiter)
    assert policy.call(fail, idempotent=True, fallback=lambda exc: "fell back") == "fell back"
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(policy.call, release.wait, idempotent=True, args=(5,))
        while policy.bulkhead.available:
            release.wait(0.01)
        with pytest.raises(BulkheadFullError):
            policy.call(lambda: "never", idempotent=True)
        release.set()
        held.result()
    policy.call(lambda: "ok", idempotent=True)
    with pytest.raises(RateLimitedError):
        policy.call(lambda: "never", idempotent=True)
    policy.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        policy.call(lambda: "never", idempotent=True)
    assert [(name, who, why) for name, who, why, _ in received] == [
        ("retry", "upstream", None),
        ("fallback", "upstream", "connection"),
        ("rejected", "upstream", "bulkhead_full"),
        ("rejected", "upstream", "rate_limited"),
        ("rejected", "upstream", "circuit_open"),
    ]
    retry = received[0][3]
    assert (retry["attempt"], isinstance(retry["exception"], ConnectionError)) == (1, True)


def test_a_receiver_that_raises_changes_nothing(make_policy):
    policy = make_policy()
    policy.breaker.force_open()

    def broken(sender, **kwargs):
        raise RuntimeError("a broken receiver")

    signals.fallback.connect(broken)
    try:
        assert policy.call(lambda: "never", idempotent=True, fallback=lambda exc: "ok") == "ok"
    finally:
        signals.fallback.disconnect(broken)


# -- the decorator, and idempotent said at every call --------------------------------------------


def test_the_decorator_runs_a_plain_function_under_a_policy_with_all_its_own_keywords(make_policy):
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 3, "RETRY_ON_EXCEPTIONS": [ConnectionError]})
    calls = []

    @resilience.policy("upstream", idempotent=True)
    def lookup(key, *, idempotent="theirs", fallback="theirs", args="theirs", kwargs="theirs"):
        calls.append(key)
        if len(calls) < 2:
            raise ConnectionError("once")
        return (key, idempotent, fallback, args, kwargs)

    assert lookup("k", idempotent=1, fallback=2, args=3, kwargs=4) == ("k", 1, 2, 3, 4)
    assert calls == ["k", "k"]
    assert lookup.__name__ == "lookup"
    policy.breaker.force_open()

    @resilience.policy("upstream", idempotent=False, fallback=lambda exc: "from cache")
    def charge(amount):
        raise AssertionError("never called while the breaker is open")

    assert charge(10) == "from cache"


def test_idempotent_has_no_default(make_policy):
    policy = make_policy()
    with pytest.raises(TypeError, match="idempotent"):
        policy.call(lambda: "ok")
    with pytest.raises(TypeError, match=r"idempotent=True .* or idempotent=False"):
        resilience.policy("upstream")


def test_a_non_idempotent_call_is_tried_once(make_policy):
    policy = make_policy(RETRY={"MAX_ATTEMPTS": 3, "RETRY_ON_EXCEPTIONS": [ConnectionError]})
    ran = []

    def charge():
        ran.append(1)
        raise ConnectionError("reset after the charge was made?")

    with pytest.raises(ConnectionError):
        policy.call(charge, idempotent=False)
    assert ran == [1]


# -- the checks name a wrong key or value -----------------------------------------------------------


@pytest.mark.parametrize(
    "entry, path, words",
    [
        ({"RATE_LIMITER": {"LIMIT_PER_PERIOD": 5}}, "p.RATE_LIMITER", "'LIMIT_FOR_PERIOD'"),
        ({"RATE_LIMITER": {"LIMIT_FOR_PERIOD": 0}}, "p.RATE_LIMITER.LIMIT_FOR_PERIOD", "> 0"),
        (
            {"CIRCUIT_BREAKER": {"SLIDING_WINDOW_TYPE": "TIME"}},
            "p.CIRCUIT_BREAKER.SLIDING_WINDOW_TYPE",
            "TIME_BASED",
        ),
        (
            {"RETRY": {"RETRY_ON_RESULT": "tests.nowhere.busy"}},
            "p.RETRY.RETRY_ON_RESULT",
            "cannot use",
        ),
        (
            {"CIRCUIT_BREAKER": {"RECORD_FAILURE_ON_RESULT": 3}},
            "p.CIRCUIT_BREAKER.RECORD_FAILURE_ON_RESULT",
            "not callable",
        ),
        ({"RETRY": {"RETRY_ON_RESULTS": None}}, "p.RETRY", "'RETRY_ON_RESULT'"),
    ],
)
def test_the_checks_name_a_wrong_key_or_value(settings, entry, path, words):
    settings.RESILIENCE_POLICIES = {"p": entry}
    errors = [m for m in checks.run_checks(tags=["resilience"]) if m.level >= checks.ERROR]
    assert [str(m.msg).split("]")[0] for m in errors] == [f"RESILIENCE_POLICIES[{path}"]
    assert words in errors[0].msg


def test_a_time_based_window_may_be_shorter_than_the_minimum_number_of_calls():
    assert not conf.validate(
        {"p": {"CIRCUIT_BREAKER": {"SLIDING_WINDOW_TYPE": "TIME_BASED", "SLIDING_WINDOW_SIZE": 2}}}
    )


def test_a_deadline_error_is_not_a_rate_limiter_refusal(make_policy, resilience_test_mode):
    from resilience import deadline as deadlines

    policy = make_policy(RATE_LIMITER={"LIMIT_FOR_PERIOD": 1, "LIMIT_REFRESH_PERIOD": 60.0})
    fresh_cycle(resilience_test_mode, 60.0, policy.rate_limiter)
    with deadlines.scope(0.01), pytest.raises(DeadlineExceededError):
        policy.call(lambda: "never", idempotent=True)
    assert policy.rate_limiter.available == 1  # no attempt started, no permit spent


def broken_predicate(result) -> bool:
    return result.status >= 500  # a bug: the result is None


def test_a_predicate_that_raises_gives_its_trial_permit_back(make_policy, resilience_test_mode):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 1},
        CIRCUIT_BREAKER={
            "MINIMUM_NUMBER_OF_CALLS": 2,
            "SLIDING_WINDOW_SIZE": 2,
            "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 1,
            "RECORD_FAILURE_ON_RESULT": "tests.resilience.test_reach.broken_predicate",
        },
    )
    for _ in range(2):
        with pytest.raises(ConnectionError):
            policy.call(fail, idempotent=True)
    resilience_test_mode.advance(31)
    with pytest.raises(AttributeError):
        policy.call(lambda: None, idempotent=True)
    assert policy.breaker.current_state == "half-open"
    # The permit came back: the next trial runs at once, not after another open wait.
    with pytest.raises(AttributeError):
        policy.call(lambda: None, idempotent=True)


def test_a_result_still_retried_when_attempts_run_out_counts_as_failed(make_policy):
    policy = make_policy(
        RETRY={"MAX_ATTEMPTS": 2, "RETRY_ON_RESULT": "tests.resilience.test_reach.is_busy"}
    )
    assert policy.call(lambda: "busy", idempotent=True) == "busy"
    assert policy.call(lambda: "busy", idempotent=False) == "busy"
    for kind, expected in (
        ("failed_with_retry", 1),
        ("failed_without_retry", 1),
        ("successful_with_retry", 0),
        ("successful_without_retry", 0),
    ):
        assert (
            testing.metric("resilience_retry_calls_total", name="upstream", kind=kind) == expected
        )
