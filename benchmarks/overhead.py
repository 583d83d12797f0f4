"""What the resilience app costs, measured side by side in one run.

    make bench            # or: .venv/bin/python benchmarks/overhead.py [--quick]

1. Per-call overhead on a function that does nothing: bare call, our full policy (memory and
   Redis breaker state), pybreaker alone, tenacity alone.
2. Per-call overhead on a real loopback HTTP call: a bare ``requests.Session`` vs ``ServiceClient``.
3. Wall time of 50 concurrent 100 ms calls through our breaker vs ``pybreaker.CircuitBreaker.call``.

Variants are measured in interleaved rounds and the median round is reported, because the
machines this runs on are shared and noisy: compare the ratios, not the absolute numbers.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "booking.settings.test")

import django

django.setup()

import pybreaker  # noqa: E402
import requests  # noqa: E402
import tenacity  # noqa: E402
from django.test import override_settings  # noqa: E402

from resilience import conf, policies  # noqa: E402
from resilience.breaker import CircuitBreaker  # noqa: E402
from resilience.http import ServiceClient  # noqa: E402
from resilience.policy import Policy  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def noop():
    return 1


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved(variants: dict, calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(per_call_us(fn, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def policy(storage=None, name="bench") -> Policy:
    raw = {
        name: {
            "CIRCUIT_BREAKER": {"STORAGE": storage},
            "BULKHEAD": {"MAX_CONCURRENT_CALLS": 100},
            "RETRY": {"BUDGET_MIN_RETRIES_PER_SECOND": 1000},
        }
    }
    return Policy(conf.build_config(name, raw), namespace=f"bench-{os.getpid()}")


def redis_available() -> bool:
    try:
        from resilience.storage import redis_client

        return bool(redis_client(REDIS_URL).ping())
    except Exception:
        return False


def table(title: str, rows: list[tuple], headers: tuple) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


def bench_function_overhead(calls: int, rounds: int) -> None:
    memory = policy()
    plain_breaker = pybreaker.CircuitBreaker()
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_random_exponential(0.1, max=2)
    )
    variants = {
        "bare function call": noop,
        "resilience policy (memory state)": lambda: memory.call(noop),
        "pybreaker.CircuitBreaker.call": lambda: plain_breaker.call(noop),
        "tenacity.Retrying": lambda: retrying(noop),
    }
    if redis_available():
        shared = policy(storage=REDIS_URL, name="bench_redis")
        variants["resilience policy (Redis state)"] = lambda: shared.call(noop)
        shared_breaker = shared.breaker
        variants["  of which: breaker on Redis alone"] = lambda: shared_breaker.call(noop)
        client = shared_breaker.storage._redis
        variants["  reference: one raw Redis MGET"] = lambda: client.mget("a", "b")
    results = interleaved(variants, calls, rounds)
    base = results["bare function call"]
    rows = [(name, f"{us:.2f}", f"{us - base:.2f}") for name, us in results.items()]
    table(
        f"1. Per-call cost on a no-op function ({calls} calls x {rounds} rounds, median round)",
        rows,
        ("variant", "us/call", "overhead us/call"),
    )
    if "resilience policy (Redis state)" not in results:
        print(f"   (Redis state not measured: no Redis at {REDIS_URL})")
    else:
        keys = list(client.scan_iter(f"bench-{os.getpid()}:*"))
        if keys:
            client.delete(*keys)


class _Quick(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = (
        64 * 1024
    )  # one write per answer: no Nagle/delayed-ACK stall between headers and body

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def bench_http_overhead(calls: int, rounds: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quick)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    session = requests.Session()
    session.trust_env = False
    raw = {"loopback": {"BULKHEAD": {"MAX_CONCURRENT_CALLS": 100}}}
    with override_settings(SERVICES={"loopback": url}, RESILIENCE_POLICIES=raw):
        client = ServiceClient("loopback")
        variants = {
            "bare requests.Session.get": lambda: session.get(url + "/x", timeout=(1, 5)),
            "ServiceClient.get (full policy)": lambda: client.get("/x"),
        }
        results = interleaved(variants, calls, rounds)
        policies.reset()
    server.shutdown()
    base = results["bare requests.Session.get"]
    rows = [(name, f"{us:.1f}", f"{us / base:.3f}") for name, us in results.items()]
    table(
        f"2. Per-call cost of a loopback HTTP GET ({calls} calls x {rounds} rounds, median round)",
        rows,
        ("variant", "us/call", "ratio to bare"),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    bench_function_overhead(calls=20000 // scale, rounds=7)
    bench_http_overhead(calls=2000 // scale, rounds=5)
    bench_concurrency(repeats=3)


if __name__ == "__main__":
    main()
