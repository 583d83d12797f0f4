"""What the resilience app costs, measured side by side in one run.

    make bench            # or: .venv/bin/python benchmarks/overhead.py [--quick]

1. Per-call cost on a function that does nothing, with metrics in gunicorn's multiprocess mode
   (the mode the stack deploys with): bare call, our full policy, the same with a rate limiter,
   tenacity alone, pybreaker alone; our policy with its breaker state in Redis, and with that
   Redis hung (SIGSTOP).
2. Per-call cost of a real loopback HTTP call: a bare ``requests.Session`` vs ``ServiceClient``.
3. Wall time of 50 concurrent 100 ms calls through our breaker vs ``pybreaker.CircuitBreaker.call``.
4. What admission control adds to a request it admits.

Variants are measured in interleaved rounds and the median round is reported, because the
machines this runs on are shared and noisy: compare the ratios, not the absolute numbers.
The ratios are checked against the goals of docs/benchmarks.md at the end.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "booking.settings.test")
# Before prometheus_client is imported: every metric then lives in memory-mapped files.
_METRICS_DIR = tempfile.TemporaryDirectory(prefix="bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR.name

import django  # noqa: E402

django.setup()

import pybreaker  # noqa: E402
import requests  # noqa: E402
import tenacity  # noqa: E402
from django.test import override_settings  # noqa: E402

from resilience import conf, policies  # noqa: E402
from resilience.breaker import CircuitBreaker  # noqa: E402
from resilience.exceptions import CircuitOpenError  # noqa: E402
from resilience.http import ServiceClient  # noqa: E402
from resilience.pipeline import Policy  # noqa: E402
from resilience.storage import close_links  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

GOALS = {
    "full policy / tenacity alone": 0.40,
    "Redis state / memory state (closed breaker)": 1.10,
    "ServiceClient / bare requests.Session": 1.05,
    "rate limiter permit, us over the policy": 1.0,
    "admission control, us per request": 5.0,
}


def noop():
    return 1


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved(variants: dict, calls: int, rounds: int) -> dict[str, list[float]]:
    """Every variant once per round, in forward order on even rounds and backward on odd ones
    (so that drift on a shared machine favours none); the samples of each."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for round_ in range(rounds):
        for name, fn in order if round_ % 2 == 0 else reversed(order):
            samples[name].append(per_call_us(fn, calls))
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of numerator / denominator, each pair measured in one round."""
    return statistics.median(
        a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)
    )


def policy(storage=None, name="bench", **sections) -> Policy:
    raw = {
        name: {
            "CIRCUIT_BREAKER": {"STORAGE": storage},
            "BULKHEAD": {"MAX_CONCURRENT_CALLS": 100},
            **sections,
        }
    }
    return Policy(
        conf.build_config(name, raw), namespace=f"bench-{os.getpid()}", storage_options=None
    )


def table(title: str, rows: list[tuple], headers: tuple) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def bench_function_overhead(calls: int, rounds: int, ratios: dict) -> None:
    memory = policy()
    # A limit no run reaches: every call takes a permit, none waits.
    limited = policy(name="bench_limited", RATE_LIMITER={"LIMIT_FOR_PERIOD": 10**9})
    plain_breaker = pybreaker.CircuitBreaker()
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_random_exponential(0.1, max=2)
    )
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = RedisServer(Path(directory)).start()
        hung = RedisServer(Path(directory)).start()
        try:
            shared = policy(storage=redis.url, name="bench_redis")
            shared_hung = policy(storage=hung.url, name="bench_hung")
            for each in (shared, shared_hung):
                assert each.breaker.state.link.wait_up(5), "Redis not reached"
            hung.hang()
            variants = {
                "bare function call": noop,
                "resilience policy (memory state)": lambda: memory.call(noop, idempotent=True),
                "resilience policy + rate limiter": lambda: limited.call(noop, idempotent=True),
                "tenacity.Retrying": lambda: retrying(noop),
                "pybreaker.CircuitBreaker.call": lambda: plain_breaker.call(noop),
                "resilience policy (Redis state)": lambda: shared.call(noop, idempotent=True),
                "resilience policy (Redis state, Redis hung)": lambda: shared_hung.call(
                    noop, idempotent=True
                ),
            }
            samples = interleaved(variants, calls, rounds)
        finally:
            close_links()
            hung.kill()
            redis.kill()
    results = medians(samples)
    base = results["bare function call"]
    policy_us = results["resilience policy (memory state)"]
    rows = [
        (name, f"{us:.2f}", f"{us - base:.2f}", f"{us / policy_us:.2f}")
        for name, us in results.items()
    ]
    table(
        f"1. Per-call cost on a no-op function, multiprocess metrics ({calls} calls x {rounds} "
        "rounds, median round)",
        rows,
        ("variant", "us/call", "overhead us/call", "x policy (memory)"),
    )
    memory = "resilience policy (memory state)"
    ratios["full policy / tenacity alone"] = ratio(samples, memory, "tenacity.Retrying")
    ratios["full policy / pybreaker alone"] = ratio(
        samples, memory, "pybreaker.CircuitBreaker.call"
    )
    ratios["rate limiter permit, us over the policy"] = statistics.median(
        a - b
        for a, b in zip(samples["resilience policy + rate limiter"], samples[memory], strict=True)
    )
    ratios["Redis state / memory state (closed breaker)"] = ratio(
        samples, "resilience policy (Redis state)", memory
    )
    ratios["Redis hung / memory state (closed breaker)"] = ratio(
        samples, "resilience policy (Redis state, Redis hung)", memory
    )


def bench_hung_redis_transitions() -> None:
    """What a hung Redis costs the calls that must change shared state: the first, once."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = RedisServer(Path(directory)).start()
        try:
            shared = policy(storage=redis.url, name="bench_trip")
            assert shared.breaker.state.link.wait_up(5)
            redis.hang()

            def fail():
                raise RuntimeError("failing")  # not transient: one attempt, no backoff sleep

            durations = []
            for _ in range(30):  # 5 failures trip it; the rest are refused by the open breaker
                start = time.perf_counter()
                with contextlib.suppress(RuntimeError, CircuitOpenError):
                    shared.call(fail, idempotent=True)
                durations.append((time.perf_counter() - start) * 1000)
        finally:
            close_links()
            redis.kill()
    rows = [
        ("calls 1-4 (closed, failing)", f"{max(durations[:4]):.2f}"),
        ("call 5 (trips: the one call that waits on Redis)", f"{durations[4]:.2f}"),
        ("calls 6-30 (refused by the open breaker)", f"{max(durations[5:]):.2f}"),
    ]
    table(
        "   Redis hung (SIGSTOP) while a breaker trips: the slowest call of each kind",
        rows,
        ("calls", "ms"),
    )


class _Quick(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # one write per answer: no Nagle/delayed-ACK stall

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def bench_http_overhead(calls: int, rounds: int, ratios: dict) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quick)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    session = requests.Session()
    session.trust_env = False
    raw = {"loopback": {"BULKHEAD": {"MAX_CONCURRENT_CALLS": 100}}}
    with override_settings(RESILIENCE_SERVICES={"loopback": url}, RESILIENCE_POLICIES=raw):
        client = ServiceClient("loopback")
        client.get("/x")  # connect once, as the bare session does below
        session.get(url + "/x", timeout=(1, 5))
        variants = {
            "bare requests.Session.get": lambda: session.get(url + "/x", timeout=(1, 5)),
            "ServiceClient.get (full policy)": lambda: client.get("/x"),
        }
        samples = interleaved(variants, calls, rounds)
        policies.reset()
    server.shutdown()
    results = medians(samples)
    base = results["bare requests.Session.get"]
    rows = [(name, f"{us:.1f}", f"{us / base:.3f}") for name, us in results.items()]
    table(
        f"2. Per-call cost of a loopback HTTP GET ({calls} calls x {rounds} rounds, median round)",
        rows,
        ("variant", "us/call", "ratio to bare"),
    )
    ratios["ServiceClient / bare requests.Session"] = ratio(
        samples, "ServiceClient.get (full policy)", "bare requests.Session.get"
    )


def bench_concurrency(repeats: int) -> None:
    config = conf.build_config("conc", {"conc": {}}).circuit_breaker
    ours = CircuitBreaker("conc", config)
    theirs = pybreaker.CircuitBreaker()

    def work():
        time.sleep(0.1)
        return True

    def wall(call) -> float:
        with ThreadPoolExecutor(max_workers=50) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: call(work), range(50)))
            return time.perf_counter() - start

    ours_s = statistics.median(wall(ours.call) for _ in range(repeats))
    theirs_s = statistics.median(wall(theirs.call) for _ in range(max(1, repeats // 3)))
    table(
        "3. Wall time of 50 concurrent 100 ms calls through one closed breaker",
        [
            ("resilience CircuitBreaker.call", f"{ours_s:.3f}", "1.0"),
            ("pybreaker.CircuitBreaker.call", f"{theirs_s:.3f}", f"{theirs_s / ours_s:.1f}"),
        ],
        ("breaker", "seconds", "x ours"),
    )


def bench_admission(calls: int, rounds: int, ratios: dict) -> None:
    """What AdmissionMiddleware adds to a request it admits (the common case), with a queue
    stamp, an in-flight limit and criticality rules, against the same view without it."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from resilience import admission

    response = HttpResponse("ok")

    def view(request):
        return response

    rules = [["POST", "/api/orders/", "critical"], ["GET", "/api/shows/", "sheddable"]]
    raw = {"ENABLED": True, "MAX_IN_FLIGHT": 64, "RULES": rules}
    with override_settings(RESILIENCE_ADMISSION=raw):
        gate = admission.AdmissionMiddleware(view)
    with override_settings(RESILIENCE_ADMISSION={"ENABLED": True, "RULES": rules}):
        shedding = admission.AdmissionMiddleware(view)
    request = RequestFactory().get("/api/shows/")
    request.META[admission.QUEUE_WAIT] = 0.002
    late = RequestFactory().get("/api/shows/")
    late.META[admission.QUEUE_WAIT] = 10.0
    samples = interleaved(
        {
            "view alone": lambda: view(request),
            "admission + view": lambda: gate(request),
            "a refusal (queued 10 s)": lambda: shedding(late),
        },
        calls,
        rounds,
    )
    results = medians(samples)
    table(
        f"4. Admission control on an admitted request ({calls} calls x {rounds} rounds)",
        [(name, f"{us:.2f}") for name, us in results.items()],
        ("variant", "us/request"),
    )
    ratios["admission control, us per request"] = statistics.median(
        a - b for a, b in zip(samples["admission + view"], samples["view alone"], strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    ratios: dict[str, float] = {}
    bench_function_overhead(calls=20000 // scale, rounds=9, ratios=ratios)
    bench_hung_redis_transitions()
    bench_http_overhead(calls=1000 // scale, rounds=15, ratios=ratios)
    bench_concurrency(repeats=3)
    bench_admission(calls=20000 // scale, rounds=9, ratios=ratios)
    rows = [
        (
            name,
            f"{value:.2f}",
            f"<= {GOALS[name]:.2f}" if name in GOALS else "-",
            ("within" if value <= GOALS[name] else "MISSED") if name in GOALS else "",
        )
        for name, value in ratios.items()
    ]
    table("Ratios, measured side by side in this run", rows, ("ratio", "measured", "goal", ""))


if __name__ == "__main__":
    main()
