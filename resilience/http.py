"""``ServiceClient``: HTTP calls to another service, each through that service's named policy.

    ServiceClient("payments").post("/api/charges/", json=body, idempotency_key=key)

returns the ``requests.Response`` for a 2xx, 3xx or 4xx answer. A connection error, a timeout
or a 5xx (or a status listed in ``RETRY_ON_STATUS``) is a failure that the policy retries and
counts, and that reaches the caller as a ``ResilienceError`` once the policy gives up.

Each attempt is bounded as a whole, whatever the server sends: it ends by ``CONNECT + READ``
after it starts, or by the deadline in force if that comes first, plus the watchdog's margin
(``WATCHDOG_MARGIN``). Socket timeouts bound one ``recv`` each, so a server that trickles its
status line and headers, a chunked body's size lines or a gzip body of empty deflate blocks
never trips them; here every socket an attempt uses is attached to a watch
(``resilience.watchdog``) that shuts it down at the attempt's end. The name lookup and the
connection, over every address the name has, share the connect timeout.
"""

import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from django.core.exceptions import ImproperlyConfigured
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from resilience import conf, policies
from resilience import deadline as deadlines
from resilience.admission import HEADER as CRITICALITY_HEADER
from resilience.admission import OVERLOAD_HEADER, current_criticality
from resilience.clock import clock
from resilience.conf import BASELINE_TIMEOUT
from resilience.exceptions import (
    BusinessError,
    DeadlineExceededError,
    OverloadedError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from resilience.pipeline import Policy
from resilience.retry import parse_retry_after
from resilience.watchdog import watchdog

# Safe to repeat by HTTP's definition; POST and PATCH only with an idempotency key.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
CHUNK = 64 * 1024
# A deadline that leaves an attempt its own CONNECT + READ less this much (or 5% of it, if
# more) has not cut its whole-answer limit short.
CUT_SHORT_TOLERANCE = 0.01
# On an error answer: "this service works, the one named here (behind it) does not". The
# caller's breaker ignores such an answer and hands it back, so that its body reaches the
# client instead of the caller's own "unavailable". Trusted only between services of a stack.
DEPENDENCY_HEADER = "X-Dependency-Unavailable"

# How long after its end an attempt may still be running: the watchdog thread's wake-up and
# the blocked read's return after the shutdown (benchmarks/deadline.py: 0.5 to 4.5 ms past the
# limit on 2 cores with the test suite running beside it).
WATCHDOG_MARGIN = 0.05
# Name lookups that may run at once (each in a thread of its own, since ``getaddrinfo``
# cannot be interrupted); a lookup beyond them waits for a slot within its connect time, so
# that threads never pile up behind a name server that does not answer.
MAX_LOOKUPS_IN_FLIGHT = 16
# How far past the attempt's end a socket timeout already set may reach before a read sets it
# again (setting it is a syscall; the watch shuts the socket down at the end anyway).
SETTIMEOUT_SLACK = 0.01

_local = threading.local()
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS_IN_FLIGHT)
# The resolver: ``socket.getaddrinfo``, replaced only by tests of a name server that hangs.
resolve = socket.getaddrinfo


def _after_fork_in_child() -> None:
    """A lookup in flight in the parent has no thread here: its slot would never come back."""
    global _lookups
    _lookups = threading.BoundedSemaphore(MAX_LOOKUPS_IN_FLIGHT)
    _local.__dict__.clear()  # the parent's watch and session belong to the parent's thread


os.register_at_fork(after_in_child=_after_fork_in_child)


def _current_watch():
    return getattr(_local, "watch", None)


def _lookup(host: str, port: int, timeout: float, family: int = socket.AF_UNSPEC) -> list:
    """``getaddrinfo`` for a name, given up after ``timeout`` (``TimeoutError``); any failure
    of the resolver is a ``socket.gaierror``.

    An address needs no lookup. A name is looked up in a thread of its own, which is left to
    finish by itself if the answer is late; at most ``MAX_LOOKUPS_IN_FLIGHT`` run at once."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    end = clock.now() + timeout
    if not _lookups.acquire(timeout=max(0.0, timeout)):
        raise socket.gaierror(
            socket.EAI_AGAIN, f"{MAX_LOOKUPS_IN_FLIGHT} name lookups already waiting"
        )
    slots = _lookups  # the semaphore this slot came from (a child process makes a new one)
    answer: list = []
    done = threading.Event()

    def run() -> None:
        try:
            answer.append(resolve(host, port, family, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller, if it still waits
            answer.append(exc)
        finally:
            slots.release()
            done.set()

    threading.Thread(target=run, name="resilience-lookup", daemon=True).start()
    if not done.wait(max(0.0, end - clock.now())):
        raise TimeoutError(f"name lookup of {host} took longer than {timeout:.3g} s")
    if isinstance(answer[0], OSError):
        raise answer[0]
    if isinstance(answer[0], BaseException):  # a label too long (UnicodeError), a broken resolver
        raise socket.gaierror(socket.EAI_FAIL, f"{host}: {answer[0]!r}") from answer[0]
    return answer[0]


def _timed_out(exc: BaseException | None) -> bool:
    """Whether a timeout is what ``exc`` wraps (urllib3 and requests wrap a send's timeout in
    'Connection aborted.'), through its arguments and causes."""
    seen = 0
    stack = [exc]
    while stack and seen < 20:
        current = stack.pop()
        seen += 1
        if isinstance(current, TimeoutError | socket.timeout):
            return True
        if isinstance(current, BaseException):
            stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
            stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


class _WatchedConnection:
    """A urllib3 connection whose sockets join the current attempt's watch. Its name lookup
    and connection to each of the name's addresses share one connect timeout."""

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        watch = _current_watch()
        until = None
        if timeout is not None:
            until = clock.now() + timeout
        if watch is not None:
            until = watch.until if until is None else min(until, watch.until)
        try:
            sock = self._connect(until)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        if watch is not None:
            watch.attach(sock)
        return sock

    def _connect(self, until: float | None) -> socket.socket:
        def left() -> float | None:
            if until is None:
                return None
            remaining = until - clock.now()
            if remaining <= 0:
                raise TimeoutError("connect timeout")
            return remaining

        host = self._dns_host.strip("[]")
        family = allowed_gai_family()  # IPv4 only on a host without IPv6, as urllib3 asks
        infos = _lookup(host, self.port, left() if until is not None else 3600.0, family)
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = None
            try:
                sock = socket.socket(family, kind, proto)
                for level, option, value in self.socket_options or ():
                    sock.setsockopt(level, option, value)
                sock.settimeout(left())
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
                # What is left, not the whole connect timeout again, for a TLS handshake.
                sock.settimeout(left())
                return sock
            except OSError as exc:  # TimeoutError included: the next address, if time is left
                if sock is not None:
                    sock.close()
                error = exc
        raise error or OSError(f"no address for {host}")

    def connect(self) -> None:
        super().connect()
        watch = _current_watch()
        if watch is not None:  # the TLS socket wraps (and detaches) the one attached above
            watch.attach(self.sock)

    def request(self, *args, **kwargs):
        watch = _current_watch()
        if watch is not None and self.sock is not None:  # a pooled connection, reused
            watch.attach(self.sock)
        return super().request(*args, **kwargs)

    def send(self, data) -> None:
        """Send with the socket's timeout at the attempt's time left: a server that reads the
        request slowly, or not at all, ends the attempt when its time is up (a timeout), not
        after ``CONNECT`` (the socket's timeout while sending, in urllib3)."""
        watch = _current_watch()
        if watch is not None:
            if self.sock is None:
                self.connect()  # as http.client would, first: so the timeout below applies
            left = watch.until - clock.now()
            if left <= 0:
                raise TimeoutError("no time left to send the request")
            self.sock.settimeout(left)
        return super().send(data)


class _HTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class _ClientErrorAnswer(BusinessError):
    """A 4xx answer (the caller's problem), or an error answer about a service behind the
    dependency (not the dependency's): never retried, never counted by the breaker. Carries
    the response back out."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"answered {response.status_code}")
        self.response = response


# requests' default headers (User-Agent, Accept-Encoding, Accept, Connection), sent with every
# request's own: the sessions have none, so that requests does not merge two header mappings
# on every call (its Protocol isinstance checks cost about 20 us a call, benchmarks/overhead.py).
_DEFAULT_HEADERS = dict(requests.utils.default_headers())


def _session() -> requests.Session:
    """One session per thread: connection reuse without sharing a ``Session`` across threads."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.headers = None  # see _DEFAULT_HEADERS
        session.trust_env = False  # calls between services never go through an HTTP proxy
        adapter = _WatchedAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


class ServiceClient:
    def __init__(self, service: str, *, policy: str | None = None) -> None:
        self.service = service
        self.policy_name = policy or service

    def __repr__(self) -> str:
        return f"<ServiceClient {self.service!r} policy={self.policy_name!r}>"

    @property
    def base_url(self) -> str:
        try:
            return conf.services()[self.service].rstrip("/")
        except KeyError:
            raise ImproperlyConfigured(
                f"No base URL for service {self.service!r}: add it to {conf.SERVICES_SETTING}."
            ) from None

    @property
    def policy(self) -> Policy:
        return policies[self.policy_name]

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        fallback: Callable[[Exception], Any] | None = None,
    ) -> requests.Response:
        method = method.upper()
        headers = {**_DEFAULT_HEADERS, **headers} if headers else dict(_DEFAULT_HEADERS)
        criticality = current_criticality.get()
        if criticality is not None:  # the request being served: its calls are as critical
            headers.setdefault(CRITICALITY_HEADER, criticality)
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        policy = self.policy
        try:
            return policy.run(
                self._attempt,
                (policy, method, self.url(path), headers, params, json),
                {},
                fallback=fallback,
                idempotent=method in IDEMPOTENT_METHODS or idempotency_key is not None,
            )
        except _ClientErrorAnswer as answer:
            # Raised inside the policy so that the breaker ignores it and retry skips it.
            return answer.response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def _attempt(self, policy: Policy, method: str, url: str, headers: dict, params, json):
        clock = policy.clock
        now = clock.now()
        # Which limit of this attempt the deadline in force made shorter than the attempt's
        # own: a timeout of that phase is the deadline's doing, not the dependency's.
        connect_cut = read_cut = body_cut = False
        if policy.enabled:
            connect, read = policy.config.timeout.connect, policy.config.timeout.read
            until = now + connect + read
            current = deadlines.current()
            if current is not None and current.expires_at < until:
                left = current.expires_at - now
                if left < 0.001:  # nothing worth sending the callee
                    raise DeadlineExceededError(
                        f"{method} {url}: no time left of the deadline", policy=policy.name
                    )
                tolerance = max(CUT_SHORT_TOLERANCE, 0.05 * (connect + read))
                connect_cut, read_cut = left < connect, left < read
                body_cut = current.expires_at < until - tolerance
                until = current.expires_at
                connect, read = min(connect, left), min(read, left)
            # The callee's budget is this attempt's: after it, nobody waits for the answer.
            headers = {**headers, deadlines.HEADER: str(int((until - now) * 1000))}
        else:
            connect = read = BASELINE_TIMEOUT
            until = now + read
        late = f"{method} {url}: answer not complete in time"
        try:
            with watchdog.watch(until) as watch:
                _local.watch = watch
                try:
                    response = _session().request(
                        method,
                        url,
                        headers=headers,
                        params=params,
                        json=json,
                        timeout=(connect, read),
                        stream=True,
                        allow_redirects=False,
                    )
                except requests.RequestException as exc:
                    # The shutdown at ``until`` looks like a closed connection, and a send that
                    # timed out like an aborted one.
                    if watch.fired or (not isinstance(exc, requests.Timeout) and _timed_out(exc)):
                        raise UpstreamTimeoutError(late, policy=policy.name) from exc
                    raise
                finally:
                    _local.watch = None
                _read_body(response, until, policy, watch)
        except (requests.Timeout, UpstreamTimeoutError) as exc:
            if isinstance(exc, requests.ConnectTimeout):
                cut = connect_cut
            elif isinstance(exc, requests.Timeout):
                cut = read_cut  # the wait for the status line and headers
            else:
                cut = body_cut  # the whole answer was not in by ``until``
            if cut:
                # The caller's deadline ended this attempt, not the dependency's slowness: the
                # breaker ignores it (an outside caller with a 1 ms deadline opens nothing).
                raise DeadlineExceededError(
                    f"{method} {url}: attempt cut short by the deadline", policy=policy.name
                ) from exc
            if isinstance(exc, UpstreamTimeoutError):
                raise
            raise UpstreamTimeoutError(f"{method} {url}: {exc}", policy=policy.name) from exc
        except requests.ConnectionError as exc:
            raise UpstreamConnectionError(f"{method} {url}: {exc}", policy=policy.name) from exc
        except requests.RequestException as exc:
            error = UpstreamError(f"{method} {url}: {exc}", policy=policy.name)
            error.retryable = False
            raise error from exc
        status = response.status_code
        if status == 503 and OVERLOAD_HEADER in response.headers:
            raise OverloadedError(
                f"{method} {url}: refused for overload ({response.headers[OVERLOAD_HEADER]})",
                policy=policy.name,
                response=response,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        retry_on = policy.config.retry.retry_on_status
        if 400 <= status < 500 and status not in retry_on:
            raise _ClientErrorAnswer(response)
        if status >= 500 and DEPENDENCY_HEADER in response.headers:
            raise _ClientErrorAnswer(response)
        if status >= 500 or status in retry_on:
            raise UpstreamStatusError(
                f"{method} {url} answered {status}",
                policy=policy.name,
                response=response,
                retryable=status in retry_on,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response


def _read_body(response: requests.Response, until: float, policy: Policy, watch) -> None:
    """Read the whole body by ``until`` (a ``policy.clock`` time), whatever pace the server keeps.

    Before each read the socket's timeout is set to the time left; the attempt's watch shuts
    the socket down at ``until`` if a read still runs (http.client reads a chunked body's size
    lines with a loop of ``recv`` calls, and a decoder may take many reads for no output).
    A body cut short by that shutdown is never taken for a whole one.
    """
    raw = response.raw
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    chunks = []
    late = f"{response.url}: response not complete in time"
    try:
        while True:
            left = until - policy.clock.now()
            if left <= 0:
                raise UpstreamTimeoutError(late, policy=policy.name)
            if sock is not None:
                # A socket timeout is a syscall to set: leave one that ends at most
                # SETTIMEOUT_SLACK after ``until`` (the watch ends the read at ``until``).
                current = sock.gettimeout()
                if current is None or current > left + SETTIMEOUT_SLACK or current < left:
                    sock.settimeout(left)
            chunk = raw.read1(CHUNK, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
        if watch.fired:  # a body without a length ends at the shutdown as if it were whole
            raise UpstreamTimeoutError(late, policy=policy.name)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        response.close()
        raise UpstreamTimeoutError(late, policy=policy.name) from exc
    except UpstreamTimeoutError:
        response.close()
        raise
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
        if watch.fired or policy.clock.now() >= until:  # the watchdog cut it off
            raise UpstreamTimeoutError(late, policy=policy.name) from exc
        raise UpstreamConnectionError(f"{response.url}: {exc}", policy=policy.name) from exc
    response._content = b"".join(chunks)
    response._content_consumed = True
    response.close()  # body read in full: this returns the connection to the pool
