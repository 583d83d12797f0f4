"""Breaker state shared through Redis: every process of a service sees the same breaker, and
Redis failing (hung, killed, restarted empty, flushed, behind) never stops one from opening.

Every test starts its own ``redis-server`` (tests/redis_server.py) and hangs, kills or
restarts it; "another process" is a real second interpreter.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from resilience import conf, metrics, policies, testing
from resilience.breaker import CircuitBreaker
from resilience.exceptions import CircuitOpenError, UpstreamStatusError
from resilience.http import ServiceClient
from resilience.storage import LinkOptions
from tests.ports import closed_port_url
from tests.resilience.conftest import TEST_DEFAULT

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 10

# Run in a separate interpreter: its own memory, the same Redis.
CHILD = """
import json, sys, threading, time
import django; django.setup()
from resilience import conf
from resilience.breaker import CircuitBreaker
from resilience.exceptions import CircuitOpenError

namespace, url, action, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = conf.build_config("payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": url}}})
breaker = CircuitBreaker("payments", config.circuit_breaker, namespace=namespace)
assert breaker.state.link.wait_up(10), "Redis not reached"
breaker.sync()

def fail():
    raise ConnectionError("refused")

if action == "trip":
    for _ in range(config.circuit_breaker.minimum_number_of_calls):
        try:
            breaker.call(fail)
        except ConnectionError:
            pass
    print(json.dumps({"state": breaker.current_state}))
elif action == "trials":
    barrier = threading.Barrier(10)
    admitted = []
    def trial():
        barrier.wait()
        try:
            admitted.append(breaker.acquire())
        except CircuitOpenError:
            pass
    threads = [threading.Thread(target=trial) for _ in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps({"admitted": len(admitted)}))
"""


def child_command(redis, namespace, action, cfg) -> list[str]:
    return [sys.executable, "-c", CHILD, namespace, redis.url, action, json.dumps(cfg)]


def child_env() -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "booking.settings.test",
        "PYTHONPATH": str(ROOT),
    }


def child(redis, namespace, action, cfg):
    out = subprocess.run(
        child_command(redis, namespace, action, cfg),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make(redis, namespace="test", **cfg) -> CircuitBreaker:
    config = conf.build_config(
        "payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": redis.url}}}
    )
    breaker = CircuitBreaker("payments", config.circuit_breaker, namespace=namespace)
    assert breaker.state.link.wait_up(5)
    breaker.sync()
    return breaker


def wait_for(predicate, timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture
def shared_policy(make_policy, redis_server, settings):
    """Policy "upstream" on the test upstream with its breaker state in the test's own Redis."""
    settings.RESILIENCE_NAMESPACE = "test"

    def make(**overrides):
        breaker = {
            "SLIDING_WINDOW_SIZE": WINDOW,
            "MINIMUM_NUMBER_OF_CALLS": 5,
            "WAIT_DURATION_IN_OPEN_STATE": 0.3,
            "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 2,
            "STORAGE": redis_server.url,
            **overrides.pop("CIRCUIT_BREAKER", {}),
        }
        policy = make_policy(RETRY={"MAX_ATTEMPTS": 1}, CIRCUIT_BREAKER=breaker, **overrides)
        assert policy.breaker.state.link.wait_up(5)
        return policy

    return make


# -- sharing ------------------------------------------------------------------------------------


def test_a_breaker_tripped_in_one_process_is_open_in_another_within_a_second(redis_server):
    here = make(redis_server, MINIMUM_NUMBER_OF_CALLS=5)
    assert here.current_state == "closed"
    assert child(redis_server, "test", "trip", {"MINIMUM_NUMBER_OF_CALLS": 5}) == {"state": "open"}
    assert wait_for(lambda: here.current_state == "open", timeout=1.0) < 1.0
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")


def test_half_open_admits_exactly_the_permitted_trials_across_processes(redis_server):
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.3,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
    }
    here = make(redis_server, **cfg)
    child(redis_server, "test", "trip", cfg)
    wait_for(lambda: here.current_state == "open", timeout=1.0)
    time.sleep(0.35)  # the open wait is timed by the Redis server's clock
    procs = [
        subprocess.Popen(
            child_command(redis_server, "test", "trials", cfg),
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(2)
    ]
    admitted = sum(
        json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])["admitted"] for p in procs
    )
    assert admitted == 3
    here.sync()
    assert here.current_state == "half-open"


def test_trial_outcomes_from_several_processes_close_the_breaker(redis_server):
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.2,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 2,
    }
    first, second = make(redis_server, **cfg), make(redis_server, **cfg)
    child(redis_server, "test", "trip", cfg)
    wait_for(lambda: first.current_state == "open" and second.current_state == "open", 1.0)
    time.sleep(0.25)
    assert first.call(lambda: 1) == 1
    wait_for(lambda: second.current_state == "half-open", 1.0)
    assert second.call(lambda: 2) == 2
    wait_for(lambda: first.current_state == "closed", 1.0)


def test_manual_control_is_shared(redis_server):
    first, second = make(redis_server), make(redis_server)
    first.force_open()
    wait_for(lambda: (second.current_state, second.mode) == ("open", "forced-open"), 1.0)
    second.force_closed()
    wait_for(lambda: (first.current_state, first.mode) == ("closed", "normal"), 1.0)


def test_trial_permits_lost_with_a_dead_process_do_not_wedge_the_breaker(redis_server):
    """Another process took every trial permit and died; after the open wait a new round starts."""
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 0.3,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
    }
    here, doomed = make(redis_server, **cfg), make(redis_server, **cfg)
    child(redis_server, "test", "trip", cfg)
    wait_for(lambda: here.current_state == "open" and doomed.current_state == "open", 1.0)
    time.sleep(0.35)
    lost = [doomed.acquire() for _ in range(3)]  # never recorded: its process is gone
    assert [kind for kind, _, _ in lost] == ["trial"] * 3
    here.sync()
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "never")
    time.sleep(0.35)
    for _ in range(3):
        assert here.call(lambda: "ok") == "ok"
    assert here.current_state == "closed"


# -- the hot path never waits on Redis ------------------------------------------------------------


def commands_processed(redis_server) -> int:
    return redis_server.client().info("stats")["total_commands_processed"]


def test_a_call_through_a_closed_breaker_sends_redis_nothing(redis_server):
    breaker = make(redis_server)
    before = commands_processed(redis_server)
    start = time.monotonic()
    for _ in range(2000):
        breaker.call(lambda: "ok")
    elapsed = time.monotonic() - start
    # Only the link's own poll (every SYNC_INTERVAL) and this INFO reach Redis meanwhile.
    polls = 2 + int(elapsed / LinkOptions().sync_interval) * 3
    assert commands_processed(redis_server) - before <= polls


def test_sharing_leaves_one_key_per_breaker(redis_server):
    """pybreaker's storage wrote its unused counters, and two keys that nothing read."""
    breaker = make(redis_server, MINIMUM_NUMBER_OF_CALLS=5)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            breaker.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    assert breaker.current_state == "open"
    assert sorted(redis_server.client().keys("*")) == [b"test:payments:breaker"]


# -- Redis failing --------------------------------------------------------------------------------


def trip_count(upstream, shared_policy) -> int:
    """503s sent through the policy until its breaker refuses a call: how many reached the server."""
    client = ServiceClient("upstream")
    before = upstream.count("/status")
    for _ in range(3 * WINDOW):
        try:
            client.get("/status/503")
        except UpstreamStatusError:
            continue
        except CircuitOpenError:
            return upstream.count("/status") - before
    raise AssertionError(f"{3 * WINDOW} failing calls and the breaker is still closed")


def cycle(policy, upstream) -> None:
    """closed -> open -> half-open -> closed, on Redis state."""
    trip_count(upstream, policy)
    time.sleep(0.35)
    client = ServiceClient("upstream")
    for _ in range(2):
        assert client.get("/ok").status_code == 200
    assert policy.breaker.current_state == "closed"


@pytest.mark.parametrize("loss", ["restart empty", "FLUSHDB"])
def test_after_redis_loses_its_data_failing_calls_open_the_breaker_again(
    shared_policy, upstream, redis_server, loss
):
    """Once, a process whose epoch was above Redis's dropped every outcome: 30 straight 500s
    and the breaker stayed closed."""
    policy = shared_policy()
    cycle(policy, upstream)
    if loss == "FLUSHDB":
        redis_server.client().flushdb()
    else:
        redis_server.restart_empty()
    reached = trip_count(upstream, policy)
    assert reached <= WINDOW
    assert policy.breaker.current_state == "open"
    wait_for(lambda: redis_server.client().hget("test:upstream:breaker", "state") == b"open", 2.0)


def test_a_redis_behind_this_process_is_reseeded_not_obeyed(shared_policy, upstream, redis_server):
    """A failover to a stale replica: Redis says closed, at an epoch this process is past."""
    policy = shared_policy(CIRCUIT_BREAKER={"WAIT_DURATION_IN_OPEN_STATE": 30.0})
    trip_count(upstream, policy)
    client = redis_server.client()
    client.hset("test:upstream:breaker", mapping={"state": "closed", "epoch": 0})
    policy.breaker.sync()
    assert policy.breaker.current_state == "open"
    assert client.hget("test:upstream:breaker", "state") == b"open"
    assert (
        testing.metric(
            "resilience_storage_events_total",
            event="reseeded",
            storage=f"127.0.0.1:{redis_server.port}/0",
        )
        >= 1
    )


@pytest.mark.parametrize("fault", ["hang", "kill"])
def test_with_redis_hung_or_killed_calls_stay_fast_and_the_breaker_still_opens(
    shared_policy, upstream, redis_server, fault
):
    policy = shared_policy()
    client = ServiceClient("upstream")
    getattr(redis_server, fault)()
    try:
        latencies = []
        for _ in range(40):
            start = time.monotonic()
            assert client.get("/ok").status_code == 200
            latencies.append(time.monotonic() - start)
        assert statistics.median(latencies) < 0.05
        assert max(latencies) < 2.0
        assert trip_count(upstream, policy) <= WINDOW
        with pytest.raises(CircuitOpenError):
            client.get("/ok")
        # Refused at once, not after a Redis timeout: no Redis command from the caller's thread
        # (a timing alone cannot tell a refused connection from none), and no refusal waits
        # anywhere near the socket timeout (the median: a shared CI machine stalls a call now
        # and then, and 20 calls once summed to 0.115 s with none of them touching Redis).
        link = policy.breaker.state.link
        caller = threading.current_thread()
        from_caller = []

        def counting(name, script):
            def run(*args, **kwargs):
                if threading.current_thread() is caller:
                    from_caller.append(name)
                return script(*args, **kwargs)

            return run

        scripts = dict(link.scripts)
        link.scripts = {name: counting(name, script) for name, script in scripts.items()}
        try:
            refusals = []
            for _ in range(20):
                start = time.monotonic()
                with pytest.raises(CircuitOpenError):
                    client.get("/ok")
                refusals.append(time.monotonic() - start)
        finally:
            link.scripts = scripts
        assert from_caller == []
        assert statistics.median(refusals) < LinkOptions().socket_timeout / 2
    finally:
        redis_server.resume() if fault == "hang" else None


@pytest.mark.parametrize("fault", ["hang", "kill"])
def test_when_redis_is_back_a_breaker_tripped_in_one_process_is_open_in_another_within_a_second(
    redis_server, fault
):
    here = make(redis_server, MINIMUM_NUMBER_OF_CALLS=5, WAIT_DURATION_IN_OPEN_STATE=30.0)
    getattr(redis_server, fault)()
    redis_server.resume() if fault == "hang" else redis_server.start()
    assert child(redis_server, "test", "trip", {"MINIMUM_NUMBER_OF_CALLS": 5}) == {"state": "open"}
    assert wait_for(lambda: here.current_state == "open", timeout=1.0) < 1.0


def test_changes_made_while_redis_was_down_are_shared_when_it_is_back(redis_server):
    here = make(redis_server, MINIMUM_NUMBER_OF_CALLS=5, WAIT_DURATION_IN_OPEN_STATE=30.0)
    other = make(redis_server, MINIMUM_NUMBER_OF_CALLS=5, WAIT_DURATION_IN_OPEN_STATE=30.0)
    redis_server.kill()
    for _ in range(5):
        with pytest.raises(ConnectionError):
            here.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    assert (here.current_state, other.current_state) == ("open", "closed")
    redis_server.start()
    wait_for(lambda: other.current_state == "open", timeout=2.0)


def test_building_a_policy_never_waits_on_a_hung_redis(shared_policy, redis_server, settings):
    redis_server.hang()
    try:
        settings.RESILIENCE_POLICIES = {
            "default": TEST_DEFAULT,
            **{f"p{i}": {"CIRCUIT_BREAKER": {"STORAGE": redis_server.url}} for i in range(5)},
        }
        start = time.monotonic()
        built = [policies[f"p{i}"] for i in range(5)]
        assert time.monotonic() - start < 0.05
        assert all(policy.breaker.current_state == "closed" for policy in built)
    finally:
        redis_server.resume()


def test_the_link_to_redis_is_logged_and_counted(redis_server, caplog):
    breaker = make(redis_server)
    label = f"127.0.0.1:{redis_server.port}/0"
    redis_server.kill()
    wait_for(lambda: not breaker.state.link.up, timeout=2.0)
    redis_server.start()
    wait_for(lambda: breaker.state.link.up, timeout=2.0)
    events = {
        event: testing.metric("resilience_storage_events_total", storage=label, event=event)
        for event in ("unreachable", "reachable")
    }
    assert events == {"unreachable": 1, "reachable": 2}  # reachable at start, and again
    assert testing.metric("resilience_storage_up", storage=label) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m for m in messages) and any("reachable" in m for m in messages)


def test_without_redis_at_all_the_breaker_protects_on_local_state():
    dead = closed_port_url("redis") + "/0"
    config = conf.build_config("payments", {"payments": {"CIRCUIT_BREAKER": {"STORAGE": dead}}})
    breaker = CircuitBreaker("payments", config.circuit_breaker, namespace="unreachable")
    for _ in range(5):
        with pytest.raises(ConnectionError):
            breaker.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "never")
    assert not breaker.state.link.up
    metrics.flush()


# -- found in review: each of these failed before its fix ------------------------------------------


def other_process(redis, **cfg) -> CircuitBreaker:
    """A breaker on a link of its own (other options: another link object, another owner): a
    second process, as far as Redis and the breaker's state can tell."""
    config = conf.build_config(
        "payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": redis.url}}}
    )
    breaker = CircuitBreaker(
        "payments",
        config.circuit_breaker,
        namespace="test",
        storage_options=LinkOptions(sync_interval=0.51),
    )
    assert breaker.state.link.wait_up(5)
    return breaker


def fail():
    raise ConnectionError("refused")


def test_a_command_redis_ran_late_cannot_override_what_this_process_did_since(redis_server):
    """Redis hung: the trip's transition script timed out here, but Redis had it in its
    socket and ran it on resuming, at an epoch the process's later local recovery (closed)
    could not override: a recovered dependency was refused for another open wait everywhere."""
    here = make(redis_server, WAIT_DURATION_IN_OPEN_STATE=1.0)
    there = other_process(redis_server, WAIT_DURATION_IN_OPEN_STATE=1.0)
    here.force_open()
    here.reset()
    redis_server.hang()
    for _ in range(5):
        with pytest.raises(ConnectionError):
            here.call(fail)
    assert (here.current_state, here.state.dirty) == ("open", 1)
    time.sleep(1.1)
    assert [here.call(lambda: "ok") for _ in range(3)] == ["ok"] * 3  # recovered, locally
    assert here.current_state == "closed"
    redis_server.resume()
    wait_for(lambda: here.state.link.up and not here.state.dirty, timeout=3.0)
    time.sleep(0.6)  # a poll of each link
    assert (here.current_state, there.current_state) == ("closed", "closed")
    assert redis_server.client().hget("test:payments:breaker", "state") == b"closed"


def test_an_operators_command_from_a_fresh_process_is_not_lost(redis_server):
    """`manage.py shell`, then force_open() before the link was up: applied locally, then
    the first sync found Redis at a later epoch and adopted it. The command was dropped."""
    worker = make(redis_server)
    worker.force_open()
    worker.reset()
    script = (
        "import django; django.setup()\n"
        "import sys, time\n"
        "from resilience import conf\n"
        "from resilience.breaker import CircuitBreaker\n"
        "config = conf.build_config('payments', {'payments': {'CIRCUIT_BREAKER': "
        "{'STORAGE': sys.argv[1]}}})\n"
        "b = CircuitBreaker('payments', config.circuit_breaker, namespace='test')\n"
        "b.force_open()\n"
        "b.state.link.wait_up(5)\n"
        "time.sleep(0.3)\n"
        "print(b.current_state, b.mode)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, redis_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=True,
    )
    assert out.stdout.split() == ["open", "forced-open"]
    wait_for(lambda: (worker.current_state, worker.mode) == ("open", "forced-open"), 1.0)


def test_a_trip_made_while_offline_changes_are_pushed_is_kept(redis_server):
    """The push of a local recovery was in flight when a call tripped the breaker again; the
    push's answer was stale, the second push lost to the first, and the trip was lost."""
    from redis import ConnectionError as RedisConnectionError

    breaker = make(redis_server, WAIT_DURATION_IN_OPEN_STATE=0.3)
    link = breaker.state.link
    for _ in range(5):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    real_sync = link.scripts["sync"]
    offline, tripped_mid_push = [True], []

    def sync(*args, **kwargs):
        if offline[0]:
            raise RedisConnectionError("Redis away")
        reply = real_sync(*args, **kwargs)
        if kwargs.get("client") is None and not tripped_mid_push:  # a push just answered
            for _ in range(5):
                with pytest.raises((ConnectionError, CircuitOpenError)):
                    breaker.call(fail)
            tripped_mid_push.append(breaker.current_state)
        return reply

    link.scripts["sync"] = sync
    link.failed("test", RedisConnectionError("Redis away"))
    time.sleep(0.35)
    assert [breaker.call(lambda: "ok") for _ in range(3)] == ["ok"] * 3  # recovered, offline
    assert breaker.current_state == "closed"
    offline[0] = False
    wait_for(lambda: link.up and not breaker.state.dirty, timeout=3.0)
    assert tripped_mid_push == ["open"]
    assert breaker.current_state == "open"
    assert redis_server.client().hget("test:payments:breaker", "state") == b"open"


def test_a_breaker_built_before_a_fork_shares_and_counts_in_the_child(redis_server):
    """The child had no link thread (its link even claimed to be up) and no metrics flusher:
    it never heard of the parent's changes, and its counts were never flushed."""
    from resilience import metrics

    breaker = make(redis_server)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the test session's teardown
        try:
            os.close(read)
            # Its own link thread, started by the fork hook (whether it has reached Redis yet
            # is a race: asserting the link still down at this line failed once in CI).
            report = {
                "own_link_thread": any(
                    thread.name.startswith("resilience-redis-") and thread.is_alive()
                    for thread in threading.enumerate()
                )
            }
            end = time.monotonic() + 3
            while breaker.mode != "forced-open" and time.monotonic() < end:
                time.sleep(0.02)
            report["saw_the_parents_command"] = breaker.mode == "forced-open"
            breaker.stats.add(metrics.CALLS_SUCCESSFUL, 7)
            time.sleep(1.5)
            report["unflushed"] = breaker.stats.counts[metrics.CALLS_SUCCESSFUL]
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    time.sleep(0.5)
    breaker.force_open()
    os.waitpid(pid, 0)
    report = json.loads(os.read(read, 10000))
    assert report == {"own_link_thread": True, "saw_the_parents_command": True, "unflushed": 0}


# -- found in the review of issue 15: each of these failed before its fix ---------------------------


def breaker_on(redis, options: LinkOptions, namespace="test", **cfg) -> CircuitBreaker:
    """A breaker on a link with ``options`` of its own: another process, as Redis sees it."""
    config = conf.build_config(
        "payments", {"payments": {"CIRCUIT_BREAKER": {**cfg, "STORAGE": redis.url}}}
    )
    return CircuitBreaker(
        "payments", config.circuit_breaker, namespace=namespace, storage_options=options
    )


def test_trial_permits_given_back_are_taken_again_at_once(redis_server):
    """Trials whose outcomes were ignored (a 4xx, an attempt the caller's deadline cut short)
    gave their permits back in Redis, but the process had noted the round as taken: the next
    trial came only after the whole open wait again (with memory storage, at once)."""
    cfg = {
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "WAIT_DURATION_IN_OPEN_STATE": 1.0,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 2,
    }
    here, there = make(redis_server, **cfg), other_process(redis_server, **cfg)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            here.call(fail)
    wait_for(lambda: there.current_state == "open", 1.0)
    time.sleep(1.05)
    permits = [here.acquire(), here.acquire()]
    assert [kind for kind, _, _ in permits] == ["trial", "trial"]
    with pytest.raises(CircuitOpenError):
        here.acquire()
    with pytest.raises(CircuitOpenError):
        there.acquire()
    given_back = time.monotonic()
    for permit in permits:
        here.record(permit, "ignored", 0.01)
    again = here.acquire()  # in this process: at once
    assert again[0] == "trial"
    here.record(again, "ignored", 0.01)
    wait_for(lambda: _took_trial(there), timeout=0.5)  # in another: within TRIAL_RECHECK
    assert time.monotonic() - given_back < 0.5  # not after the open wait (1 s) again
    assert here.current_state == "half-open"


def _took_trial(breaker) -> bool:
    try:
        return breaker.acquire()[0] == "trial"
    except CircuitOpenError:
        return False


def test_after_redis_loses_its_data_a_fresh_processs_change_is_not_taken_for_an_old_one(
    redis_server,
):
    """A tripped the breaker (epoch 1, open); Redis was flushed; a fresh process disabled the
    breaker, which wrote epoch 1 again. A ignored it as old news and stayed open for good."""
    here = breaker_on(redis_server, LinkOptions(sync_interval=60.0), MINIMUM_NUMBER_OF_CALLS=5)
    assert here.state.link.wait_up(5)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            here.call(fail)
    client = redis_server.client()
    wait_for(lambda: client.hget("test:payments:breaker", "state") == b"open", 1.0)
    client.flushall()
    fresh = other_process(redis_server)  # creates the breaker's hash anew: closed, epoch 0
    fresh.disable()  # epoch 1 of the new incarnation
    assert client.hget("test:payments:breaker", "epoch") == str(here.state.epoch).encode()
    wait_for(lambda: (here.current_state, here.mode) == ("closed", "disabled"), 2.0)
    assert here.call(lambda: "ok") == "ok"
    life = client.hget("test:payments:breaker", "inc").decode()
    assert here.state.incarnation == fresh.state.incarnation == life


def test_a_redis_that_never_answers_in_time_is_logged_counted_and_shown(redis_server, caplog):
    """With a 60 ms round trip against the 50 ms socket timeout the link never came up, and
    nothing said so: no log line, no event, and every breaker silently ran alone."""
    label = f"127.0.0.1:{redis_server.port}/0"
    redis_server.hang()  # accepts connections, answers nothing: slower than any timeout
    try:
        breaker = breaker_on(redis_server, LinkOptions(sync_interval=0.53), namespace="never")
        event = {"storage": label, "event": "unreachable"}
        wait_for(lambda: testing.metric("resilience_storage_events_total", **event) == 1, 3.0)
        time.sleep(0.6)  # several probes more: said once per spell, not per probe
        assert testing.metric("resilience_storage_events_total", **event) == 1
        assert testing.metric("resilience_storage_up", storage=label) == 0
        assert not breaker.state.link.up
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.levelname == "ERROR" and r.name == "resilience.storage"
        ]
        assert len(errors) == 1 and "not reached" in errors[0] and "SOCKET_TIMEOUT" in errors[0]
    finally:
        redis_server.resume()
    wait_for(lambda: breaker.state.link.up, 3.0)
    assert testing.metric("resilience_storage_up", storage=label) == 1


def test_an_operators_command_in_a_new_life_of_the_hash_is_not_undone_by_an_older_process(
    redis_server,
):
    """Redis restarted empty; a worker started meanwhile created the hash anew (epoch 0) and
    its operator forced it open (epoch 1). A process from before, at epoch 4, came back and
    re-seeded Redis from its own view: 1 < 4. The command was lost everywhere."""
    here = breaker_on(redis_server, LinkOptions(sync_interval=60.0, probe_interval=2.0))
    assert here.state.link.wait_up(5)
    for _ in range(2):
        here.force_open()
        here.reset()
    assert here.state.epoch == 4
    redis_server.restart_empty()
    fresh = breaker_on(redis_server, LinkOptions(sync_interval=60.0, probe_interval=0.05))
    assert fresh.state.link.wait_up(5)
    fresh.force_open()
    assert here.state.link.wait_up(5)  # the older process is back
    wait_for(lambda: (here.current_state, here.mode) == ("open", "forced-open"), 1.0)
    assert (fresh.current_state, fresh.mode) == ("open", "forced-open")
    assert redis_server.client().hget("test:payments:breaker", "mode") == b"forced-open"


def test_a_process_follows_an_older_life_of_the_hash_that_comes_back(redis_server):
    """A moved from life X to life Y after a flush; then X came back (a lagging replica, a
    snapshot). A dropped every answer from X as stale news and never opened again."""
    here = breaker_on(redis_server, LinkOptions(sync_interval=60.0), MINIMUM_NUMBER_OF_CALLS=5)
    assert here.state.link.wait_up(5)
    here.force_open()
    here.reset()
    client = redis_server.client()
    life_x = client.hgetall("test:payments:breaker")
    client.flushall()
    here.sync()
    here.force_open()
    here.reset()
    assert here.state.incarnation != life_x[b"inc"].decode()
    client.delete("test:payments:breaker")
    client.hset("test:payments:breaker", mapping=life_x)
    # It follows life X again (its view comes back as X's, so its window starts afresh),
    # and failures there trip the breaker, as anywhere.
    for _ in range(10):
        with pytest.raises((ConnectionError, CircuitOpenError)):
            here.call(fail)
    assert here.current_state == "open"
    assert here.state.incarnation == life_x[b"inc"].decode()
    assert client.hget("test:payments:breaker", "state") == b"open"
    assert other_process(redis_server).current_state == "open"


def test_a_trial_that_finds_redis_flushed_still_counts(redis_server):
    """The trial permit that re-seeded a flushed Redis came with the generation of before,
    while the answer had started a new one: its outcome and its release were dropped, and the
    breaker stayed half-open, refusing calls, for another open wait."""
    breaker = make(
        redis_server,
        MINIMUM_NUMBER_OF_CALLS=5,
        WAIT_DURATION_IN_OPEN_STATE=0.3,
        PERMITTED_CALLS_IN_HALF_OPEN_STATE=1,
    )
    for _ in range(5):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    time.sleep(0.35)
    permit = breaker.acquire()
    breaker.record(permit, "ignored", 0.01)
    assert breaker.current_state == "half-open"
    redis_server.client().flushall()
    permit = breaker.acquire()  # re-seeds Redis from this process's half-open view
    assert permit[1] == breaker.state.view[2]
    breaker.record(permit, "success", 0.01)
    assert breaker.current_state == "closed"
    assert breaker.call(lambda: "ok") == "ok"
