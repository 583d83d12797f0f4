"""How far past its limit an attempt runs against servers that never stop sending slowly.

    .venv/bin/python benchmarks/deadline.py [--repeats N]

Each slow answer of ``tests/upstream.py`` (real HTTP on 127.0.0.1) is called ``N`` times with
``CONNECT 0.2``, ``READ 0.3`` and one attempt: the attempt's limit is 0.5 s. Printed: when the
call ended (median and latest of the repeats, in ms), to compare with the limit plus
``resilience.http.WATCHDOG_MARGIN``. An answer that never comes ends earlier, at the socket's
read timeout. A shared machine wakes threads late now and then: read the median as the
mechanism, the latest as the machine.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "booking.settings.test")

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402

from resilience import policies  # noqa: E402
from resilience.exceptions import UpstreamTimeoutError  # noqa: E402
from resilience.http import WATCHDOG_MARGIN, ServiceClient  # noqa: E402
from tests.upstream import Upstream  # noqa: E402

LIMIT = 0.5
SLOW = {
    "status line and headers, a byte every 50 ms": "/head?every=0.05&n=150",
    "gzip body of empty deflate blocks every 20 ms": "/gzip?every=0.02&n=300",
    "Content-Length body, a byte every 50 ms": "/trickle?every=0.05&n=150",
    "chunked size line, a byte every 50 ms": "/chunked?every=0.05&n=150",
    "body to the connection's close, a byte every 50 ms": "/close?every=0.05&n=150",
    "no answer at all": "/hang",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    upstream = Upstream().start()
    upstream.server.handle_error = lambda *args: None  # the client hung up: that is the point
    raw = {
        "slow": {
            "TIMEOUT": {"CONNECT": 0.2, "READ": LIMIT - 0.2},
            "DEADLINE": 5.0,
            "RETRY": {"MAX_ATTEMPTS": 1},
            "CIRCUIT_BREAKER": {"MINIMUM_NUMBER_OF_CALLS": 1000, "SLIDING_WINDOW_SIZE": 1000},
        }
    }
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; attempt limit {LIMIT} s")
    bound = (LIMIT + WATCHDOG_MARGIN) * 1000
    print("\n| slow answer | ended after, median (ms) | latest (ms) | limit + margin (ms) |")
    print("|---|---|---|---|")
    with override_settings(RESILIENCE_SERVICES={"slow": upstream.url}, RESILIENCE_POLICIES=raw):
        client = ServiceClient("slow")
        for name, path in SLOW.items():
            ended = []
            for _ in range(args.repeats):
                start = time.monotonic()
                try:
                    client.get(path)
                except UpstreamTimeoutError:
                    pass
                else:
                    raise SystemExit(f"{name}: answered within {LIMIT} s, no timeout")
                ended.append((time.monotonic() - start) * 1000)
                upstream.release()
                upstream.reset()
            print(f"| {name} | {statistics.median(ended):.1f} | {max(ended):.1f} | {bound:.0f} |")
        policies.reset()
    upstream.stop()


if __name__ == "__main__":
    main()
