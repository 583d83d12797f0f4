"""The attempt timeout is a hard bound, whatever the server sends.

A matrix of real slow servers on 127.0.0.1: the status line and headers trickled, a
Content-Length, chunked, connection-close or gzip body trickled, a listener that accepts and
never answers, a name lookup that hangs and a name whose every address drops the connection
attempt. With ``CONNECT 0.5``, ``READ 1.0`` and one attempt, every call ends by 1.5 s after it
starts plus the watchdog's margin, with the timeout exception any other timeout raises.
Before the watch covered the whole attempt, trickled headers held such a call 30 s and a gzip
body of empty deflate blocks 50 s (the servers here stop after 15 s).
"""

import contextlib
import json
import os
import socket
import threading
import time

import pytest

from resilience import deadline as deadlines
from resilience import http, testing
from resilience.exceptions import (
    DeadlineExceededError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
)
from resilience.http import WATCHDOG_MARGIN, ServiceClient

CONNECT, READ = 0.5, 1.0
ATTEMPT = CONNECT + READ
# What a shared 2-core CI machine adds on top of the watchdog's own margin: a thread that is
# woken late, a test process descheduled for a moment.
SCHEDULING = 0.25


@pytest.fixture
def policy(make_policy):
    return make_policy(
        DEADLINE=3.0, TIMEOUT={"CONNECT": CONNECT, "READ": READ}, RETRY={"MAX_ATTEMPTS": 1}
    )


def timed_call(path: str) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        ServiceClient("upstream").get(path)
    except Exception as exc:  # the caller's view: what it got, and when
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


SLOW_ANSWERS = {
    "status line and headers trickled": "/head?every=0.1&n=150",
    "gzip body of empty deflate blocks": "/gzip?every=0.05&n=300",
    "Content-Length body trickled": "/trickle?every=0.2&n=75",
    "chunked body trickled": "/chunked?every=0.1&n=150",
    "body until the connection closes, trickled": "/close?every=0.1&n=150",
    "an answer that never comes": "/hang",
}


@pytest.mark.parametrize("path", SLOW_ANSWERS.values(), ids=SLOW_ANSWERS.keys())
def test_a_slow_answer_ends_the_attempt_at_its_timeout(policy, upstream, path):
    elapsed, exc = timed_call(path)
    assert isinstance(exc, UpstreamTimeoutError), exc
    assert elapsed < ATTEMPT + WATCHDOG_MARGIN + SCHEDULING, elapsed
    assert testing.metric("resilience_timeout_calls_total", name="upstream", kind="attempt") == 1


def test_a_body_cut_off_at_the_timeout_is_never_taken_for_a_whole_one(policy, upstream):
    """A body without a length ends when the connection does: the watchdog's shutdown must
    not read as the end of a complete answer."""
    _, exc = timed_call("/close?every=0.05&n=100")
    assert isinstance(exc, UpstreamTimeoutError), exc


def test_trickled_headers_end_at_the_deadline_when_it_comes_first(policy, upstream):
    with deadlines.scope(0.8):
        elapsed, exc = timed_call("/head?every=0.1&n=150")
    assert isinstance(exc, DeadlineExceededError), exc
    assert elapsed < 0.8 + WATCHDOG_MARGIN + SCHEDULING, elapsed


def test_the_bulkhead_slot_is_free_when_the_call_ends(make_policy, upstream):
    make_policy(
        TIMEOUT={"CONNECT": CONNECT, "READ": 0.5},
        RETRY={"MAX_ATTEMPTS": 1},
        BULKHEAD={"MAX_CONCURRENT_CALLS": 1, "MAX_WAIT": 0.0},
    )
    _, exc = timed_call("/head?every=0.1&n=150")
    assert isinstance(exc, UpstreamTimeoutError), exc
    assert ServiceClient("upstream").get("/ok").status_code == 200


def test_a_complete_answer_within_the_timeout_is_read_whole(policy, upstream):
    assert ServiceClient("upstream").get("/head?every=0.005&n=60").content == b"{}"
    assert ServiceClient("upstream").get("/close?every=0.01&n=10").content == b"x" * 10
    for _ in range(3):  # the pooled connection is reused, and its watch is a new one each time
        assert ServiceClient("upstream").get("/ok").json() == {"ok": True}


# -- connecting --------------------------------------------------------------------------------


@pytest.fixture
def silent_listener():
    """Accepts connections and never reads or answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def run():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def dropped_address():
    """An address whose connection attempts hang: a listener whose queue is full (Linux drops
    the SYN, and the client waits as it would for a host that is gone)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fill = []
    for _ in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        fill.append(sock)
    time.sleep(0.05)
    yield ("127.0.0.1", port)
    for sock in fill:
        sock.close()
    listener.close()


def test_a_listener_that_accepts_and_never_answers(settings, policy, silent_listener):
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": silent_listener}
    elapsed, exc = timed_call("/ok")
    assert isinstance(exc, UpstreamTimeoutError), exc
    assert elapsed < ATTEMPT + WATCHDOG_MARGIN + SCHEDULING, elapsed


def test_a_name_whose_every_address_drops_the_connection_shares_one_connect_timeout(
    settings, make_policy, dropped_address, monkeypatch
):
    """Three addresses, each of which would take the whole connect timeout: together they
    take it once."""
    host, port = dropped_address
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))] * 3
    monkeypatch.setattr(http, "resolve", lambda *args: answers)
    make_policy(TIMEOUT={"CONNECT": CONNECT, "READ": READ}, RETRY={"MAX_ATTEMPTS": 1})
    settings.RESILIENCE_SERVICES = {
        **settings.RESILIENCE_SERVICES,
        "upstream": f"http://several.test:{port}",
    }
    elapsed, exc = timed_call("/ok")
    assert isinstance(exc, UpstreamTimeoutError), exc
    assert elapsed < CONNECT + WATCHDOG_MARGIN + SCHEDULING, elapsed


def test_a_name_lookup_that_hangs_ends_at_the_connect_timeout(settings, make_policy, monkeypatch):
    """No name server here can be made to hang (the machine's resolver is not the test's to
    change), so the lookup function is: it sleeps 5 s, as a silent name server makes
    ``getaddrinfo`` wait."""
    monkeypatch.setattr(http, "resolve", lambda *args: time.sleep(5.0) or [])
    make_policy(TIMEOUT={"CONNECT": CONNECT, "READ": READ}, RETRY={"MAX_ATTEMPTS": 1})
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": "http://hung.test"}
    elapsed, exc = timed_call("/ok")
    assert isinstance(exc, UpstreamTimeoutError), exc
    assert elapsed < CONNECT + WATCHDOG_MARGIN + SCHEDULING, elapsed


def test_lookups_that_hang_are_capped_and_a_later_call_waits_only_its_connect_timeout(
    settings, make_policy, monkeypatch
):
    """A name server that never answers must not pile up a thread per call: the 17th lookup
    waits for a slot (a burst of quick lookups gets one soon), and gives up with the call."""
    release = threading.Event()
    monkeypatch.setattr(http, "resolve", lambda *args: release.wait(10.0) and [])
    make_policy(
        TIMEOUT={"CONNECT": 0.05, "READ": READ},
        RETRY={"MAX_ATTEMPTS": 1},
        CIRCUIT_BREAKER={"SLIDING_WINDOW_SIZE": 100, "MINIMUM_NUMBER_OF_CALLS": 100},
    )
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": "http://hung.test"}
    try:
        for _ in range(http.MAX_LOOKUPS_IN_FLIGHT):
            timed_call("/ok")
        lookups = sum(1 for t in threading.enumerate() if t.name == "resilience-lookup")
        assert lookups == http.MAX_LOOKUPS_IN_FLIGHT
        elapsed, exc = timed_call("/ok")
        assert exc is not None and elapsed < 0.05 + WATCHDOG_MARGIN + SCHEDULING, (exc, elapsed)
        assert "name lookups already waiting" in str(exc)
        assert sum(1 for t in threading.enumerate() if t.name == "resilience-lookup") == lookups
    finally:
        release.set()


def test_a_burst_of_quick_lookups_beyond_the_cap_all_connect(settings, make_policy, upstream):
    """40 threads each open their first connection at once (after a hiccup every pooled
    connection is gone), with a name that takes 50 ms to look up: all 40 get their answer."""
    port = int(upstream.url.rsplit(":", 1)[1])
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    original = http.resolve
    http.resolve = lambda *args: time.sleep(0.05) or answers
    try:
        make_policy(
            # Room for a busy CI machine: the cap must not refuse, however slow the round.
            TIMEOUT={"CONNECT": 3.0, "READ": READ},
            DEADLINE=5.0,
            RETRY={"MAX_ATTEMPTS": 1},
            BULKHEAD={"MAX_CONCURRENT_CALLS": 40, "MAX_WAIT": 0.0},
        )
        settings.RESILIENCE_SERVICES = {
            **settings.RESILIENCE_SERVICES,
            "upstream": f"http://burst.test:{port}",
        }
        start = threading.Barrier(40)

        def first_call():
            start.wait()
            return timed_call("/ok")[1]

        threads = [threading.Thread(target=lambda: results.append(first_call())) for _ in range(40)]
        results: list = []
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        http.resolve = original
    assert results == [None] * 40, [str(r) for r in results if r]


def test_an_address_whose_socket_cannot_be_made_is_skipped(settings, make_policy, upstream):
    """An IPv6 answer on a host without IPv6 fails in ``socket()`` itself; the next address
    must still be tried (simulated: a protocol the kernel refuses for a stream socket)."""
    port = int(upstream.url.rsplit(":", 1)[1])
    refused = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP, "", ("127.0.0.1", port))
    good = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
    original = http.resolve
    http.resolve = lambda *args: [refused, good]
    try:
        make_policy(TIMEOUT={"CONNECT": CONNECT, "READ": READ}, RETRY={"MAX_ATTEMPTS": 1})
        settings.RESILIENCE_SERVICES = {
            **settings.RESILIENCE_SERVICES,
            "upstream": f"http://two.test:{port}",
        }
        assert ServiceClient("upstream").get("/ok").json() == {"ok": True}
    finally:
        http.resolve = original


@pytest.mark.parametrize(
    "failure", [UnicodeError("label empty or too long"), RuntimeError("resolver broke")]
)
def test_a_resolver_that_fails_oddly_is_a_connection_error(
    settings, make_policy, monkeypatch, failure
):
    def broken(*args):
        raise failure

    monkeypatch.setattr(http, "resolve", broken)
    make_policy(TIMEOUT={"CONNECT": CONNECT, "READ": READ}, RETRY={"MAX_ATTEMPTS": 1})
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": "http://odd.test"}
    with pytest.raises(UpstreamConnectionError):
        ServiceClient("upstream").get("/ok")


def test_a_request_body_the_server_never_reads_ends_as_a_timeout(settings, policy, silent_listener):
    """Sending blocks once the server's buffers are full: the send had the connect timeout
    (0.5 s) and ended as an 'aborted' connection error; it has the attempt's time left."""
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "upstream": silent_listener}
    start = time.monotonic()
    with pytest.raises(UpstreamTimeoutError):
        ServiceClient("upstream").put("/x", json={"blob": "x" * (32 * 1024 * 1024)})
    elapsed = time.monotonic() - start
    assert ATTEMPT - 0.1 < elapsed < ATTEMPT + WATCHDOG_MARGIN + SCHEDULING, elapsed


def test_a_child_forked_mid_call_bounds_its_own_calls(settings, policy, upstream, monkeypatch):
    """A fork (gunicorn's workers) while the parent has a call on the watch and name lookups
    hanging: the child's watchdog runs, and the lookups' slots are the child's to use."""
    release = threading.Event()
    monkeypatch.setattr(http, "resolve", lambda *args: release.wait(10.0) and [])
    held = ServiceClient("held")
    settings.RESILIENCE_SERVICES = {**settings.RESILIENCE_SERVICES, "held": "http://hung.test"}
    settings.RESILIENCE_POLICIES = {
        **settings.RESILIENCE_POLICIES,
        "held": {
            "TIMEOUT": {"CONNECT": 0.05, "READ": READ},
            "RETRY": {"MAX_ATTEMPTS": 1},
            "CIRCUIT_BREAKER": {"SLIDING_WINDOW_SIZE": 100, "MINIMUM_NUMBER_OF_CALLS": 100},
        },
    }
    for _ in range(http.MAX_LOOKUPS_IN_FLIGHT):  # every slot taken by a lookup that hangs
        with contextlib.suppress(Exception):
            held.get("/")
    in_flight = threading.Thread(target=timed_call, args=("/head?every=0.1&n=150",))
    in_flight.start()
    time.sleep(0.3)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without the test session's teardown
        try:
            os.close(read)
            elapsed, exc = timed_call("/head?every=0.1&n=150")
            _, lookup = timed_call_of(held)
            report = {
                "type": type(exc).__name__,
                "elapsed": elapsed,
                "lookup": str(lookup),
            }
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        os.waitpid(pid, 0)
        report = json.loads(os.read(read, 10000))
    finally:
        release.set()
        in_flight.join()
    assert report["type"] == "UpstreamTimeoutError", report
    assert report["elapsed"] < ATTEMPT + WATCHDOG_MARGIN + SCHEDULING, report
    assert "already waiting" not in report["lookup"], report  # it waited on a lookup of its own


def timed_call_of(client: ServiceClient) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        client.get("/")
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None
