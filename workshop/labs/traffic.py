"""``manage.py lab traffic``: a short, bounded load on the running stack, and what it showed.

Browsers and buyers as the scenarios have them (``workshop.scenarios.load``), for a few
seconds, with a progress line every two seconds; then two tables: what the users saw per
endpoint, and what each caller's policy did towards each dependency in those seconds (calls,
failures, timeouts, retries, rejections, fallbacks, p50 and p99 of the calls against the
attempt timeout, the breaker's state now), read from the services' ``/metrics`` before and
after, as the control room reads them.
"""

import threading
import time
from collections.abc import Callable

import requests

from workshop.console import graph
from workshop.console.watch import Reading, quantile
from workshop.labs.progress import Since, Snapshot
from workshop.scenarios.load import ENDPOINTS, ERROR, NO_ANSWER, Load, Profile, summarize
from workshop.scenarios.runner import percentile
from workshop.scenarios.stack import RunningStack

MAX_SECONDS = 120


def run(
    stack: RunningStack,
    *,
    seconds: float,
    browsers: int,
    buyers: int,
    orders: int,
    out: Callable[[str], None],
) -> None:
    gateway = stack.urls["gateway"]
    try:
        answer = requests.get(f"{gateway}/api/shows/", timeout=5)
        shows = [show["id"] for show in answer.json()] if answer.status_code == 200 else []
    except (requests.RequestException, ValueError):
        shows = []
    if not shows:
        # The gateway cannot list shows (inventory down?): the buyers still book the demo's.
        shows = list(range(1, 9))
    profile = Profile(
        browsers=browsers,
        buyers=buyers,
        duration=seconds,
        orders_per_buyer=orders,
        buyer_think=0.5,
        browser_think=0.2,
        client_timeout=15.0,
        max_requests=20 * int(seconds) * max(1, browsers + buyers),
    )
    out(f"Traffic on {gateway}: {profile.describe()}")
    before = Snapshot.take(stack)
    load = Load(gateway, profile, shows)
    done = threading.Event()

    def progress() -> None:
        while not done.wait(2.0):
            samples = list(load.samples)
            failed = sum(s.outcome in (ERROR, NO_ANSWER) for s in samples)
            out(f"  {load.elapsed():4.0f} s  {len(samples):4d} requests, {failed} failed")

    reporter = threading.Thread(target=progress, daemon=True)
    load.start()
    reporter.start()
    samples = load.join()
    done.set()
    reporter.join()
    time.sleep(1.2)  # the services flush their metrics every second
    since = Since(before, Snapshot.take(stack))
    out("")
    out(users_table(samples))
    out("")
    out(policies_table(since))


def users_table(samples) -> str:
    lines = [
        "What the users saw:",
        f"  {'endpoint':<38} {'requests':>8} {'failed':>6} {'p50':>8} {'p99':>8}  answers",
    ]
    for endpoint in ENDPOINTS:
        of = [s for s in samples if s.endpoint == endpoint]
        if not of:
            continue
        latencies = sorted(s.latency for s in of)
        failed = sum(s.outcome in (ERROR, NO_ANSWER) for s in of)
        lines.append(
            f"  {endpoint:<38} {len(of):>8} {failed:>6} {_ms(percentile(latencies, 50)):>8} "
            f"{_ms(percentile(latencies, 99)):>8}  {summarize(of)}"
        )
    return "\n".join(lines)


def policies_table(since: Since) -> str:
    """One row per caller -> dependency that made or refused a call in the window."""
    header = (
        f"  {'caller -> dependency':<30} {'calls':>5} {'failed':>6} {'timeouts':>8} "
        f"{'retries':>7} {'rejected':>8} {'refused':>7} {'fallbacks':>9} {'p50':>7} "
        f"{'p99':>7} {'timeout':>7}  breaker"
    )
    lines = ["What the policies did (refused: not permitted by an open breaker):", header]
    for caller, callee in graph.edges():

        def grew(metric, caller=caller, callee=callee, **labels):
            return since.delta(caller, metric, name=callee, **labels)

        calls = grew("resilience_retry_calls_total")
        refused = grew("resilience_circuitbreaker_calls_total", kind="not_permitted")
        rejected = grew("resilience_bulkhead_calls_total", kind="rejected")
        if not (calls or refused or rejected):
            continue
        failed = grew("resilience_circuitbreaker_calls_total", kind="failed") + grew(
            "resilience_circuitbreaker_calls_total", kind="slow_failed"
        )
        now = _reading(caller, since.now)
        then = None if since.restarted(caller) else _reading(caller, since.start)
        if then is None:
            then = Reading(caller, since.start.taken)  # empty: counted from 0
        p50 = quantile(0.5, now, then, "resilience_call_duration_seconds", name=callee)
        p99 = quantile(0.99, now, then, "resilience_call_duration_seconds", name=callee)
        timeout = since.value(
            caller, "resilience_policy_setting", name=callee, setting="attempt_timeout_seconds"
        )
        lines.append(
            f"  {caller + ' -> ' + callee:<30} {calls:>5.0f} {failed:>6.0f} "
            f"{grew('resilience_timeout_calls_total'):>8.0f} "
            f"{grew('resilience_retry_attempts_total'):>7.0f} {rejected:>8.0f} {refused:>7.0f} "
            f"{grew('resilience_fallback_calls_total'):>9.0f} {_ms(p50):>7} {_ms(p99):>7} "
            f"{_ms(timeout):>7}  {breaker_state(since, caller, callee)}"
        )
    if len(lines) == 2:
        lines.append("  (no calls: is the stack up?)")
    return "\n".join(lines)


def breaker_state(since: Since, caller: str, callee: str) -> str:
    """The shared state, or with memory storage the worst any worker process sees."""
    states = [
        labels["state"]
        for name, labels, value in since.now.samples(caller)
        if name == "resilience_circuitbreaker_process_state" and labels["name"] == callee and value
    ]
    if not states:
        return "-"
    for state in ("open", "half-open"):
        if state in states:
            return f"{state} ({states.count(state)} of {len(states)} workers)"
    return "closed"


def _reading(service: str, snapshot: Snapshot) -> Reading:
    reading = Reading(service, snapshot.taken)
    reading.samples = snapshot.samples(service)
    return reading


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
