"""A bounded load driver: browsers and buyers on the gateway's public API, in threads.

Every run stops by itself: at ``duration`` seconds, after ``max_requests`` requests in all,
and each buyer after ``orders_per_buyer`` orders, whichever comes first. A request that gets
no answer within ``client_timeout`` counts as ``no_answer``, as a user who gave up would.
For open-ended load with a UI, use the locustfile at the repository's root instead.
"""

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass

import requests

# What a request's answer counts as.
OK = "ok"  # the user got what they asked for
BUSINESS = "business"  # a correct refusal (sold out): not a failure of the system
ERROR = "error"  # an error answer (5xx, or a 4xx the user did not cause)
NO_ANSWER = "no_answer"  # timed out or refused: the user saw nothing

SHOWS = "GET /api/shows/"
SHOW = "GET /api/shows/{id}/"
RECOMMENDATIONS = "GET /api/shows/{id}/recommendations/"
ORDER = "POST /api/orders/"
ENDPOINTS = (SHOWS, SHOW, RECOMMENDATIONS, ORDER)


@dataclass(frozen=True)
class Profile:
    browsers: int = 4
    buyers: int = 10
    duration: float = 15.0
    orders_per_buyer: int = 3
    buyer_think: float = 0.5
    browser_think: float = 0.2
    client_timeout: float = 10.0
    max_requests: int = 5000
    # Buyers whose client retries an order (same Idempotency-Key) on no answer, a 5xx or a
    # 409, with jittered backoff, for up to this many seconds; 0: one attempt per order.
    retry_for: float = 0.0
    # The share of orders whose first attempt is sent twice at once (a double click).
    duplicate_rate: float = 0.0

    def describe(self) -> str:
        return (
            f"{self.browsers} browsers + {self.buyers} buyers x {self.orders_per_buyer} orders, "
            f"at most {self.duration:g} s and {self.max_requests} requests, "
            f"client timeout {self.client_timeout:g} s"
        )


@dataclass(frozen=True)
class Sample:
    at: float  # seconds after the load started that the request was sent
    endpoint: str
    latency: float
    status: int | None  # None: no answer
    outcome: str
    detail: str  # order status, recommendation source, error code, or exception name
    order_id: str | None = None
    key: str | None = None  # an order's Idempotency-Key: every attempt of one order shares it

    def as_dict(self) -> dict:
        return asdict(self)


def tally(samples) -> Counter:
    """How many samples ended each way: their detail (order status, recommendation source,
    error code), else their outcome."""
    return Counter(s.detail or s.outcome for s in samples)


def summarize(samples) -> str:
    """``tally`` as one line, most frequent first: "confirmed 18, payment_pending 2"."""
    return ", ".join(f"{k} {v}" for k, v in tally(samples).most_common()) or "-"


class Load:
    def __init__(self, gateway: str, profile: Profile, shows: list[int]) -> None:
        if not shows:
            raise ValueError("the load needs at least one show to browse and book")
        self.gateway = gateway.rstrip("/")
        self.profile = profile
        self.shows = shows
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = time.monotonic()  # start() resets it; buy() and browse() work without

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.started = time.monotonic()
        users = [(self._browser, i) for i in range(self.profile.browsers)]
        users += [(self._buyer, i) for i in range(self.profile.buyers)]
        for target, i in users:
            thread = threading.Thread(target=target, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self) -> list[Sample]:
        """Wait for every user to finish (bounded: duration plus one client timeout)."""
        profile = self.profile
        end = self.started + profile.duration + profile.retry_for + profile.client_timeout + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        self._stop.set()
        with self._lock:
            return sorted(self.samples, key=lambda s: s.at)

    def run(self) -> list[Sample]:
        self.start()
        return self.join()

    def stop(self) -> None:
        self._stop.set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _may_send(self) -> bool:
        if self._stop.is_set() or self.elapsed() >= self.profile.duration:
            return False
        with self._lock:
            if self._sent >= self.profile.max_requests:
                return False
            self._sent += 1
            return True

    def _think(self, seconds: float) -> None:
        self._stop.wait(seconds * random.uniform(0.5, 1.5))

    # -- users -------------------------------------------------------------------------------------

    def _browser(self, n: int) -> None:
        session = requests.Session()
        while self.browse(session):
            self._think(self.profile.browser_think)

    def browse(self, session=None) -> bool:
        """The show list, a show, its recommendations (each recorded); False once stopped."""
        session = session or requests
        if not self._may_send():
            return False
        answer = self._request(session, "GET", SHOWS, "/api/shows/")
        shows = self.shows
        if answer is not None and answer.status_code == 200:
            shows = [show["id"] for show in answer.json()] or self.shows
        show = random.choice(shows)
        for endpoint, path in (
            (SHOW, f"/api/shows/{show}/"),
            (RECOMMENDATIONS, f"/api/shows/{show}/recommendations/"),
        ):
            if not self._may_send():
                return False
            self._request(session, "GET", endpoint, path)
        return True

    def _buyer(self, n: int) -> None:
        session = requests.Session()
        for i in range(self.profile.orders_per_buyer):
            if not self._may_send():
                return
            show = self.shows[(n + i * self.profile.buyers) % len(self.shows)]
            email = f"buyer{n}.{i}@example.com"
            if self.profile.retry_for:
                self.buy_until_answered(show, session=session, email=email)
            else:
                self.buy(show, session=session, email=email)
            self._think(self.profile.buyer_think)

    def buy(self, show: int, *, session=None, email: str = "fan@example.com", key=None):
        """Place one order for one seat of ``show`` (recorded as a sample); the answer or None."""
        key = key or uuid.uuid4().hex
        return self._request(
            session or requests,
            "POST",
            ORDER,
            "/api/orders/",
            key=key,
            json={"show_id": show, "quantity": 1, "email": email, "card_token": "tok_visa"},
            headers={"Idempotency-Key": key},
        )

    def buy_until_answered(self, show: int, *, session, email: str) -> None:
        """One order, retried with its key until it gets a final answer or ``retry_for`` passes
        (the give-up is recorded)."""
        key = uuid.uuid4().hex
        end = time.monotonic() + self.profile.retry_for
        if random.random() < self.profile.duplicate_rate:
            twin = threading.Thread(
                target=self.buy,
                args=(show,),
                kwargs={"session": requests.Session(), "email": email, "key": key},
                daemon=True,
            )
            twin.start()
            self._threads.append(twin)
        delay = 0.5
        while True:
            answer = self.buy(show, session=session, email=email, key=key)
            if answer is not None and answer.status_code < 500 and answer.status_code != 409:
                return
            if time.monotonic() + delay > end:
                self._record(
                    Sample(self.elapsed(), ORDER, 0.0, None, NO_ANSWER, "gave up", key=key)
                )
                return
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 4.0)

    # -- one request -------------------------------------------------------------------------------

    def _request(self, session, method, endpoint, path, key=None, **kwargs):
        at = self.elapsed()
        began = time.monotonic()
        try:
            answer = session.request(
                method, self.gateway + path, timeout=self.profile.client_timeout, **kwargs
            )
        except requests.RequestException as exc:
            latency = time.monotonic() - began
            self._record(
                Sample(at, endpoint, latency, None, NO_ANSWER, type(exc).__name__, key=key)
            )
            return None
        latency = time.monotonic() - began
        outcome, detail, order_id = classify(endpoint, answer)
        self._record(
            Sample(at, endpoint, latency, answer.status_code, outcome, detail, order_id, key)
        )
        return answer

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)


def classify(endpoint: str, answer: requests.Response) -> tuple[str, str, str | None]:
    """(outcome, detail, order id) of one answer, as the user would judge it."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    code = body.get("code", "") if isinstance(body, dict) else ""
    if endpoint == ORDER:
        if answer.status_code in (200, 201) and isinstance(body, dict):
            status = body.get("status", "")
            if status in ("confirmed", "payment_pending", "paid"):
                return OK, status, body.get("id")
            if status in ("failed", "refunding") and body.get("failure_code", "") in (
                "seats_unavailable",
                "",
            ):
                return BUSINESS, "sold out", body.get("id")
            return ERROR, f"{status} {body.get('failure_code', '')}".strip(), body.get("id")
        return ERROR, f"{answer.status_code} {code}".strip(), None
    if answer.status_code == 200:
        if endpoint == RECOMMENDATIONS and isinstance(body, dict):
            return OK, f"source={body.get('source')}", None
        return OK, "", None
    return ERROR, f"{answer.status_code} {code}".strip(), None
