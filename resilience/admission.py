"""Admission control: a service refuses, at once and cheaply, the work it cannot do in time.

A circuit breaker protects a caller from a failing dependency; nothing in it protects a service
from its own callers. Offered more than it can serve, a server that queues everything ends up
serving requests whose clients have already left, and at a few times its capacity it does no
useful work at all (congestion collapse). ``AdmissionMiddleware`` bounds what a process takes
on, two ways:

- **Queue time**, CoDel's idea as Facebook's servers use it: with
  ``resilience.gunicorn.ThreadWorker`` gunicorn notes when each request was queued for a
  thread. A request that waited longer than its class's ``MAX_QUEUE_TIME`` is answered 503
  with ``Retry-After`` before any view runs: its client has likely given up, and serving it
  late only makes the next ones late too.
- **In flight**: at most ``MAX_IN_FLIGHT`` requests inside Django per process, the last
  ``CRITICAL_RESERVE`` of them for critical requests only.

Each request has a **criticality**: ``critical`` (placing an order, settling a payment),
``default``, or ``sheddable`` (browsing), which is shed first. Inside the stack it comes with
the request (``X-Criticality``, trusted like the deadline header: not at the edge), else from
``RULES`` (method and path prefix), else ``DEFAULT_CRITICALITY``. ``EXEMPT_PATHS`` (health,
metrics, the chaos API) are never shed. A refusal costs a few microseconds of this process.
"""

import contextvars
import math
import threading
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.http import JsonResponse

from resilience import conf, metrics

SETTING = "RESILIENCE_ADMISSION"
HEADER = "X-Criticality"
# On a refusal: "this service sheds load", so that a caller's ServiceClient raises
# OverloadedError (never retried, never counted by its breaker, counted by its throttle).
OVERLOAD_HEADER = "X-Overloaded"
META_KEY = "HTTP_X_CRITICALITY"
# The WSGI environ key where resilience.gunicorn.ThreadWorker puts the seconds the request
# waited in gunicorn's queue for a thread (not the time its client took to send it).
QUEUE_WAIT = "resilience.queue_wait"

CRITICAL, DEFAULT, SHEDDABLE = "critical", "default", "sheddable"
CRITICALITIES = (CRITICAL, DEFAULT, SHEDDABLE)

DEFAULTS = {
    "ENABLED": False,
    "MAX_IN_FLIGHT": None,  # None: no bound of its own (gunicorn's threads bound it)
    "CRITICAL_RESERVE": 0.25,
    "MAX_QUEUE_TIME": {CRITICAL: 2.0, DEFAULT: 0.5, SHEDDABLE: 0.25},
    "RULES": [],  # [["POST", "/api/orders/", "critical"], ["GET", "/", "sheddable"], ...]
    "DEFAULT_CRITICALITY": DEFAULT,
    "EXEMPT_PATHS": ["/health/", "/metrics", "/chaos/"],
    "RETRY_AFTER": 1,
}

# Outcomes, by criticality, counted in this process and added to the metrics at each flush.
ADMITTED, SHED_QUEUE, SHED_IN_FLIGHT = "admitted", "shed_queue_time", "shed_in_flight"


@dataclass(frozen=True)
class Config:
    enabled: bool
    max_in_flight: int | None
    critical_reserve: float
    max_queue_time: dict
    rules: tuple
    default_criticality: str
    exempt_paths: tuple
    retry_after: int


def raw() -> dict:
    value = getattr(settings, SETTING, None) or {}
    return value if isinstance(value, dict) else {"__invalid__": value}


def validate(value: dict | None = None) -> list[str]:
    """Every problem with ``RESILIENCE_ADMISSION``, each naming its key."""
    value = raw() if value is None else value
    if "__invalid__" in value:
        return [f"{SETTING} must be a dict, got {value['__invalid__']!r}."]
    problems = []
    for key in value:
        if key not in DEFAULTS:
            problem = conf._unknown("", key, DEFAULTS)
            problems.append(f"{SETTING}: {problem.message}")
    cfg = {**DEFAULTS, **{k: v for k, v in value.items() if k in DEFAULTS}}
    if not isinstance(cfg["ENABLED"], bool):
        problems.append(f"{SETTING}['ENABLED'] must be True or False.")
    limit = cfg["MAX_IN_FLIGHT"]
    if limit is not None and not (
        isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
    ):
        problems.append(
            f"{SETTING}['MAX_IN_FLIGHT'] must be None or a whole number > 0, got {limit!r}."
        )
    reserve = cfg["CRITICAL_RESERVE"]
    if not (conf._number(reserve) and 0 <= reserve < 1):
        problems.append(
            f"{SETTING}['CRITICAL_RESERVE'] must be a fraction in [0, 1), got {reserve!r}."
        )
    waits = cfg["MAX_QUEUE_TIME"]
    if not isinstance(waits, dict) or set(waits) - set(CRITICALITIES):
        problems.append(
            f"{SETTING}['MAX_QUEUE_TIME'] must map {', '.join(CRITICALITIES)} to seconds, "
            f"got {waits!r}."
        )
    elif not all(conf._number(v) and v > 0 for v in waits.values()):
        problems.append(f"{SETTING}['MAX_QUEUE_TIME'] values must be seconds > 0, got {waits!r}.")
    paths = cfg["EXEMPT_PATHS"]
    if not (isinstance(paths, list | tuple) and all(isinstance(p, str) and p for p in paths)):
        problems.append(
            f"{SETTING}['EXEMPT_PATHS'] must be a list of path prefixes, got {paths!r}."
        )
    rules = cfg["RULES"]
    if not isinstance(rules, list | tuple):
        problems.append(f"{SETTING}['RULES'] must be a list of rules, got {rules!r}.")
        rules = []
    for rule in rules:
        if not (
            isinstance(rule, list | tuple)
            and len(rule) == 3
            and all(isinstance(part, str) for part in rule)
            and rule[2] in CRITICALITIES
        ):
            problems.append(
                f"{SETTING}['RULES']: each rule is [METHOD or '*', path prefix, criticality], "
                f"got {rule!r}."
            )
    if cfg["DEFAULT_CRITICALITY"] not in CRITICALITIES:
        problems.append(
            f"{SETTING}['DEFAULT_CRITICALITY'] must be one of {', '.join(CRITICALITIES)}."
        )
    retry_after = cfg["RETRY_AFTER"]
    if not (
        isinstance(retry_after, int) and not isinstance(retry_after, bool) and retry_after >= 0
    ):
        problems.append(f"{SETTING}['RETRY_AFTER'] must be whole seconds >= 0.")
    return problems


def build() -> Config:
    cfg = {**DEFAULTS, **raw()}
    return Config(
        enabled=cfg["ENABLED"],
        max_in_flight=cfg["MAX_IN_FLIGHT"],
        critical_reserve=float(cfg["CRITICAL_RESERVE"]),
        max_queue_time={**DEFAULTS["MAX_QUEUE_TIME"], **cfg["MAX_QUEUE_TIME"]},
        rules=tuple((m.upper(), prefix, level) for m, prefix, level in cfg["RULES"]),
        default_criticality=cfg["DEFAULT_CRITICALITY"],
        exempt_paths=tuple(cfg["EXEMPT_PATHS"]),
        retry_after=int(cfg["RETRY_AFTER"]),
    )


class _Counts:
    """This process's admission outcomes since the last flush, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tally: Counter = Counter()
        self.in_flight = 0

    def flush(self) -> None:
        with self.lock:
            tally, self.tally = self.tally, Counter()
            in_flight = self.in_flight
        for (criticality, outcome), n in tally.items():
            metrics.admission_requests.labels(criticality, outcome).inc(n)
        metrics.admission_in_flight().set(in_flight)

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        self.tally = Counter()
        self.in_flight = 0


counts = _Counts()
_registered = False

# The criticality of the request this thread serves, for ServiceClient to pass on
# (X-Criticality): an order's calls to payments and inventory are critical too.
current_criticality: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resilience_criticality", default=None
)


class AdmissionMiddleware:
    """Put it first: a refusal must cost nothing but this check (after the security basics)."""

    def __init__(self, get_response) -> None:
        global _registered
        self.get_response = get_response
        self.config = build()
        # Read once, like the rest of the settings here (a settings lookup costs a microsecond).
        self.trust_header = conf.trust_deadline_header()
        # In-flight room by criticality: all of MAX_IN_FLIGHT for critical requests; the
        # reserve (whole slots, at least one) less for default ones, twice that for sheddable
        # ones (browsing is shed first), never below one slot.
        limit = self.config.max_in_flight or 0
        reserve = math.ceil(limit * self.config.critical_reserve) if limit else 0
        self.room = {
            CRITICAL: limit,
            DEFAULT: max(1, limit - reserve),
            SHEDDABLE: max(1, limit - 2 * reserve),
        }
        if not _registered:
            _registered = True
            metrics.register_flush(counts.flush, counts.after_fork)

    def criticality(self, request) -> str:
        config = self.config
        if self.trust_header:  # inside the stack: the caller said
            said = request.META.get(META_KEY)
            if said in CRITICALITIES:
                return said
        method, path = request.method, request.path
        for rule_method, prefix, level in config.rules:
            if (rule_method == "*" or rule_method == method) and path.startswith(prefix):
                return level
        return config.default_criticality

    def __call__(self, request):
        config = self.config
        if not config.enabled or request.path.startswith(config.exempt_paths):
            return self.get_response(request)
        level = self.criticality(request)
        request.criticality = level
        waited = request.META.get(QUEUE_WAIT)
        if waited is not None and waited > config.max_queue_time[level]:
            return self._refuse(level, SHED_QUEUE, waited)
        limit = config.max_in_flight
        state = counts
        with state.lock:
            if limit is not None:
                if state.in_flight >= self.room[level]:
                    state.tally[(level, SHED_IN_FLIGHT)] += 1
                    admitted = False
                else:
                    admitted = True
            else:
                admitted = True
            if admitted:
                state.in_flight += 1
                state.tally[(level, ADMITTED)] += 1
        if not admitted:
            return self._answer(level, f"{state.in_flight} of {limit} requests in flight")
        token = current_criticality.set(level)
        try:
            return self.get_response(request)
        finally:
            current_criticality.reset(token)
            with state.lock:
                state.in_flight -= 1

    def _refuse(self, level: str, outcome: str, waited: float):
        with counts.lock:
            counts.tally[(level, outcome)] += 1
        return self._answer(level, f"it waited {waited * 1000:.0f} ms for a thread")

    def _answer(self, level: str, why: str):
        response = JsonResponse(
            {
                "code": "overloaded",
                "message": f"This service is over capacity and sheds {level} requests first: "
                f"{why}. Try again shortly.",
            },
            status=503,
        )
        response["Retry-After"] = str(self.config.retry_after)
        response[OVERLOAD_HEADER] = level
        return response
