"""How much traffic a dependency that fails every call receives: attempts per call, measured.

    .venv/bin/python benchmarks/retry_budget.py [--seconds 30] [--processes 2]

Each row runs ``--processes`` real processes (like gunicorn workers of one service) that call
a function failing with a transient error, at a fixed total rate, through a policy with the
shipped retry settings (3 attempts, budget ratio 0.2, a floor of 1 retry/s over a 10 s
window; the breaker disabled so that only the budget limits retries). It prints the attempts
each call made on average, with memory breaker state (each process has the whole floor) and
with Redis state (the processes share one floor). All rows run at once.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATES = (0.5, 1.0, 2.0, 5.0, 100.0)


def child(storage: str, rate: float, seconds: float, namespace: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "booking.settings.test")
    import django

    django.setup()
    from resilience import conf
    from resilience.exceptions import ResilienceError
    from resilience.pipeline import Policy

    raw = {"flaky": {"CIRCUIT_BREAKER": {"STORAGE": storage or None}}}
    policy = Policy(conf.build_config("flaky", raw), namespace=namespace)
    if policy.breaker.state.shared:
        assert policy.breaker.state.link.wait_up(10), "Redis not reached"
    policy.breaker.disable()
    counts = {"calls": 0, "attempts": 0}
    lock = threading.Lock()

    def fail():
        with lock:
            counts["attempts"] += 1
        raise ConnectionError("refused")

    def one_call():
        with lock:
            counts["calls"] += 1
        with contextlib.suppress(ConnectionError, ResilienceError):
            policy.call(fail, idempotent=True)

    # One call per interval, each in its own thread (a call may sleep in backoff).
    with ThreadPoolExecutor(max_workers=64) as pool:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            pool.submit(one_call)
            n += 1
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
    print(json.dumps(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        storage, rate, seconds, namespace = args.child
        child(storage, float(rate), float(seconds), namespace)
        return

    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-budget-") as directory:
        redis = RedisServer(Path(directory)).start()
        try:
            runs = {}
            for storage_name, storage in (("memory", ""), ("redis", redis.url)):
                for rate in RATES:
                    namespace = f"budget-{storage_name}-{rate}"
                    runs[(storage_name, rate)] = [
                        subprocess.Popen(
                            [
                                sys.executable,
                                __file__,
                                "--child",
                                storage,
                                str(rate / args.processes),
                                str(args.seconds),
                                namespace,
                            ],
                            stdout=subprocess.PIPE,
                            text=True,
                        )
                        for _ in range(args.processes)
                    ]
            results = {}
            for key, procs in runs.items():
                calls = attempts = 0
                for proc in procs:
                    out = json.loads(proc.communicate(timeout=args.seconds + 120)[0])
                    calls, attempts = calls + out["calls"], attempts + out["attempts"]
                results[key] = attempts / calls if calls else float("nan")
        finally:
            redis.kill()
    print(
        f"Attempts per call at a dependency that fails every call ({args.processes} processes, "
        f"{args.seconds:g} s per rate, shipped retry settings)"
    )
    print(f"{'calls/s (all processes)':<26}" + "".join(f"{r:>8g}" for r in RATES))
    for storage_name, label in (
        ("memory", "memory state (floor each)"),
        ("redis", "Redis state (one floor)"),
    ):
        print(f"{label:<26}" + "".join(f"{results[(storage_name, r)]:>8.2f}" for r in RATES))


if __name__ == "__main__":
    main()
