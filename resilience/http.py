"""``ServiceClient``: HTTP calls to another service, each through that service's named policy.

    ServiceClient("payments").post("/api/charges/", json=body, idempotency_key=key)

returns the ``requests.Response`` for a 2xx, 3xx or 4xx answer. A connection error, a timeout
or a 5xx (or a status listed in ``RETRY_ON_STATUS``) is a failure that the policy retries and
counts, and that reaches the caller as a ``ResilienceError`` once the policy gives up.

Each attempt is bounded as a whole: connect within ``TIMEOUT.CONNECT``, then the complete
response within ``TIMEOUT.READ``, both capped by the deadline in force. ``requests``' own read
timeout is per socket read, so a server that trickles a byte at a time never trips it; here
the body is read chunk by chunk with the socket's timeout set to the time that is left.
"""

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from django.core.exceptions import ImproperlyConfigured

from resilience import conf, policies
from resilience import deadline as deadlines
from resilience.conf import BASELINE_TIMEOUT
from resilience.exceptions import (
    BusinessError,
    DeadlineExceededError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from resilience.policy import Policy
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

_local = threading.local()


class _ClientErrorAnswer(BusinessError):
    """A 4xx answer (the caller's problem), or an error answer about a service behind the
    dependency (not the dependency's): never retried, never counted by the breaker. Carries
    the response back out."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"answered {response.status_code}")
        self.response = response


def _session() -> requests.Session:
    """One session per thread: connection reuse without sharing a ``Session`` across threads."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False  # calls between services never go through an HTTP proxy
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
        headers = dict(headers or {})
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
            _read_body(response, until, policy)
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


def _read_body(response: requests.Response, until: float, policy: Policy) -> None:
    """Read the whole body by ``until`` (a ``policy.clock`` time), whatever pace the server keeps.

    Before each read the socket's timeout is set to the time left. A chunked body also gets
    the watchdog, because http.client reads its size lines with a loop of ``recv`` calls.
    """
    raw = response.raw
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    guard = (
        watchdog.guard(sock, until)
        if sock is not None and raw.chunked
        else contextlib.nullcontext()
    )
    chunks = []
    late = f"{response.url}: response not complete in time"
    try:
        with guard:
            while True:
                left = until - policy.clock.now()
                if left <= 0:
                    raise UpstreamTimeoutError(late, policy=policy.name)
                if sock is not None:
                    sock.settimeout(left)
                chunk = raw.read1(CHUNK, decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        response.close()
        raise UpstreamTimeoutError(late, policy=policy.name) from exc
    except UpstreamTimeoutError:
        response.close()
        raise
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
        if policy.clock.now() >= until:  # the watchdog cut it off
            raise UpstreamTimeoutError(late, policy=policy.name) from exc
        raise UpstreamConnectionError(f"{response.url}: {exc}", policy=policy.name) from exc
    response._content = b"".join(chunks)
    response._content_consumed = True
    response.close()  # body read in full: this returns the connection to the pool
