"""Policy configuration: defaults, merging and validation of ``RESILIENCE_POLICIES``.

A named policy is the library defaults, then ``RESILIENCE_POLICIES["default"]``, then the
named entry, merged section by section. ``validate`` returns every problem with the
setting path that caused it; ``manage.py check`` reports them (``resilience.checks``) and
``build_config`` refuses to build a policy that has any.
"""

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SETTING = "RESILIENCE_POLICIES"
DEFAULT_ALIAS = "default"

# Values chosen for a dependency inside one data centre; every policy should tune its own.
DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    # No attempt starts with less than MINIMUM_TIME_LEFT of the deadline left: it could not
    # finish, and its side effect would run for an answer nobody reads.
    "TIMEOUT": {"CONNECT": 1.0, "READ": 5.0, "MINIMUM_TIME_LEFT": 0.05},
    "DEADLINE": 10.0,
    "RETRY": {
        "MAX_ATTEMPTS": 3,
        "BACKOFF_INITIAL": 0.1,
        "BACKOFF_MULTIPLIER": 2.0,
        "BACKOFF_MAX": 2.0,
        "RETRY_ON_STATUS": [502, 503, 504, 429],
        "BUDGET_RATIO": 0.2,
        "BUDGET_MIN_RETRIES_PER_SECOND": 1.0,
        "BUDGET_WINDOW": 10.0,
        "RETRY_ON_EXCEPTIONS": [],
        "RETRY_ON_RESULT": None,
    },
    "CIRCUIT_BREAKER": {
        "FAILURE_RATE_THRESHOLD": 50,
        "SLIDING_WINDOW_TYPE": "COUNT_BASED",
        "SLIDING_WINDOW_SIZE": 10,
        "MINIMUM_NUMBER_OF_CALLS": 5,
        "SLOW_CALL_DURATION": 5.0,
        "SLOW_CALL_RATE_THRESHOLD": 100,
        "WAIT_DURATION_IN_OPEN_STATE": 30.0,
        "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
        "STORAGE": None,
        "IGNORE_EXCEPTIONS": [],
        "RECORD_FAILURE_ON_RESULT": None,
    },
    "BULKHEAD": {"MAX_CONCURRENT_CALLS": 10, "MAX_WAIT": 0.0},
    # None: no rate limiter. Else at most LIMIT_FOR_PERIOD attempts per LIMIT_REFRESH_PERIOD
    # seconds in this process; an attempt waits up to TIMEOUT_DURATION for a permit.
    "RATE_LIMITER": {
        "LIMIT_FOR_PERIOD": None,
        "LIMIT_REFRESH_PERIOD": 1.0,
        "TIMEOUT_DURATION": 0.0,
    },
    # Client-side adaptive throttling (resilience.throttle): None turns it off.
    "THROTTLE": {"K": 2.0},
}
COUNT_BASED, TIME_BASED = "COUNT_BASED", "TIME_BASED"
SECTIONS = tuple(key for key, value in DEFAULTS.items() if isinstance(value, dict))

# The naive baseline: what a plain ``requests`` call with a generous timeout does.
BASELINE_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class TimeoutConfig:
    connect: float
    read: float
    minimum_time_left: float = 0.05


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    max_attempts: int
    backoff_initial: float
    backoff_multiplier: float
    backoff_max: float
    retry_on_status: frozenset[int]
    budget_ratio: float
    budget_min_retries_per_second: float
    budget_window: float
    retry_on_exceptions: tuple[type[BaseException], ...] = ()
    retry_on_result: Callable[[Any], bool] | None = None


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    failure_rate_threshold: float
    sliding_window_size: int  # calls (COUNT_BASED) or seconds (TIME_BASED)
    minimum_number_of_calls: int
    slow_call_duration: float
    slow_call_rate_threshold: float
    wait_duration_in_open_state: float
    permitted_calls_in_half_open_state: int
    storage: str | None
    ignore_exceptions: tuple[type[BaseException], ...]
    sliding_window_type: str = COUNT_BASED
    record_failure_on_result: Callable[[Any], bool] | None = None


@dataclass(frozen=True, kw_only=True)
class BulkheadConfig:
    max_concurrent_calls: int
    max_wait: float


@dataclass(frozen=True, kw_only=True)
class RateLimiterConfig:
    limit_for_period: int
    limit_refresh_period: float
    timeout_duration: float


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    name: str
    enabled: bool
    timeout: TimeoutConfig
    deadline: float
    retry: RetryConfig
    circuit_breaker: BreakerConfig
    bulkhead: BulkheadConfig
    rate_limiter: RateLimiterConfig | None = None
    throttle_k: float | None = 2.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy setting; ``path`` names the key, like ``payments.RETRY``."""

    path: str
    message: str
    id: str

    def __str__(self) -> str:
        return f"{SETTING}[{self.path}]: {self.message}"


def merged(raw_policies: dict, name: str) -> dict:
    """The library defaults, then the ``default`` entry, then ``name``, merged section by section."""
    result: dict[str, Any] = {
        key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULTS.items()
    }
    layers = [raw_policies.get(DEFAULT_ALIAS) or {}]
    if name != DEFAULT_ALIAS:
        layers.append(raw_policies.get(name) or {})
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for key, value in layer.items():
            if key in SECTIONS and isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key].update(value)
            else:
                result[key] = value
    return result


def _unknown(path: str, key: str, known) -> Problem:
    hint = difflib.get_close_matches(str(key), list(known), n=1)
    suffix = f" Did you mean {hint[0]!r}?" if hint else f" Known keys: {', '.join(sorted(known))}."
    return Problem(path, f"unknown key {key!r}.{suffix}", "resilience.E001")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(raw_policies: dict) -> list[Problem]:
    problems = []
    for name, entry in raw_policies.items():
        if not isinstance(entry, dict):
            problems.append(Problem(name, "must be a dict of policy settings.", "resilience.E002"))
            continue
        for key, value in entry.items():
            if key not in DEFAULTS:
                problems.append(_unknown(name, key, DEFAULTS))
            elif key in SECTIONS:
                if not isinstance(value, dict):
                    problems.append(Problem(f"{name}.{key}", "must be a dict.", "resilience.E002"))
                    continue
                problems.extend(
                    _unknown(f"{name}.{key}", sub, DEFAULTS[key])
                    for sub in value
                    if sub not in DEFAULTS[key]
                )
    return problems


def _check_values(name: str, cfg: dict) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path: str, message: str, id: str = "resilience.E002") -> None:
        problems.append(Problem(f"{name}.{path}", message, id))

    def positive(path: str, value, *, allow_zero: bool = False, integer: bool = False) -> bool:
        ok = _number(value) and (value >= 0 if allow_zero else value > 0)
        if ok and integer and not isinstance(value, int):
            ok = False
        if not ok:
            kind = "a whole number" if integer else "a number"
            limit = ">= 0" if allow_zero else "> 0"
            bad(path, f"must be {kind} {limit}, got {value!r}.")
        return ok

    if not isinstance(cfg["ENABLED"], bool):
        bad("ENABLED", f"must be True or False, got {cfg['ENABLED']!r}.")
    timeout, retry = cfg["TIMEOUT"], cfg["RETRY"]
    breaker, bulkhead = cfg["CIRCUIT_BREAKER"], cfg["BULKHEAD"]
    connect_ok = positive("TIMEOUT.CONNECT", timeout["CONNECT"])
    read_ok = positive("TIMEOUT.READ", timeout["READ"])
    deadline_ok = positive("DEADLINE", cfg["DEADLINE"])
    least_ok = positive("TIMEOUT.MINIMUM_TIME_LEFT", timeout["MINIMUM_TIME_LEFT"], allow_zero=True)
    if least_ok and deadline_ok and timeout["MINIMUM_TIME_LEFT"] >= cfg["DEADLINE"]:
        bad(
            "TIMEOUT.MINIMUM_TIME_LEFT",
            f"must be shorter than the DEADLINE ({cfg['DEADLINE']:g} s), got "
            f"{timeout['MINIMUM_TIME_LEFT']!r}: no attempt could ever start.",
        )
    wait_ok = positive("BULKHEAD.MAX_WAIT", bulkhead["MAX_WAIT"], allow_zero=True)
    if connect_ok and read_ok and deadline_ok and wait_ok:
        attempt = timeout["CONNECT"] + timeout["READ"]
        if attempt + bulkhead["MAX_WAIT"] > cfg["DEADLINE"]:
            wait = bulkhead["MAX_WAIT"]
            spent = f"MAX_WAIT + CONNECT + READ = {wait + attempt:g} s" if wait else ""
            bad(
                "TIMEOUT",
                f"one attempt may take {spent or f'CONNECT + READ = {attempt:g} s'}, longer "
                f"than the DEADLINE of {cfg['DEADLINE']:g} s for the whole call (the wait for a "
                "bulkhead slot counts inside the deadline).",
                "resilience.E003",
            )

    attempts_ok = positive("RETRY.MAX_ATTEMPTS", retry["MAX_ATTEMPTS"], integer=True)
    initial_ok = positive("RETRY.BACKOFF_INITIAL", retry["BACKOFF_INITIAL"], allow_zero=True)
    if not (_number(retry["BACKOFF_MULTIPLIER"]) and retry["BACKOFF_MULTIPLIER"] >= 1):
        bad(
            "RETRY.BACKOFF_MULTIPLIER",
            f"must be a number >= 1, got {retry['BACKOFF_MULTIPLIER']!r}.",
        )
    max_ok = positive("RETRY.BACKOFF_MAX", retry["BACKOFF_MAX"], allow_zero=True)
    if initial_ok and max_ok and retry["BACKOFF_MAX"] < retry["BACKOFF_INITIAL"]:
        bad("RETRY.BACKOFF_MAX", "must not be smaller than BACKOFF_INITIAL.")
    if (
        attempts_ok
        and initial_ok
        and deadline_ok
        and retry["MAX_ATTEMPTS"] > 1
        and retry["BACKOFF_INITIAL"] >= cfg["DEADLINE"]
    ):
        bad(
            "RETRY.BACKOFF_INITIAL",
            f"the first backoff ({retry['BACKOFF_INITIAL']:g} s) cannot fit in the DEADLINE "
            f"({cfg['DEADLINE']:g} s): no retry could ever run. Lower the backoff or set "
            "MAX_ATTEMPTS to 1.",
            "resilience.E004",
        )
    statuses = retry["RETRY_ON_STATUS"]
    if not isinstance(statuses, list | tuple | set | frozenset) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
    ):
        bad("RETRY.RETRY_ON_STATUS", f"must be a list of HTTP status codes, got {statuses!r}.")
    elif any(400 <= s < 500 and s not in (408, 425, 429) for s in statuses):
        bad(
            "RETRY.RETRY_ON_STATUS",
            "must not list a 4xx other than 408, 425 or 429: a client error is never transient.",
        )
    if not (_number(retry["BUDGET_RATIO"]) and 0 <= retry["BUDGET_RATIO"] <= 1):
        bad("RETRY.BUDGET_RATIO", f"must be a number from 0 to 1, got {retry['BUDGET_RATIO']!r}.")
    positive(
        "RETRY.BUDGET_MIN_RETRIES_PER_SECOND",
        retry["BUDGET_MIN_RETRIES_PER_SECOND"],
        allow_zero=True,
    )
    positive("RETRY.BUDGET_WINDOW", retry["BUDGET_WINDOW"])

    for key in ("FAILURE_RATE_THRESHOLD", "SLOW_CALL_RATE_THRESHOLD"):
        value = breaker[key]
        if not (_number(value) and 0 < value <= 100):
            bad(f"CIRCUIT_BREAKER.{key}", f"must be a percentage in (0, 100], got {value!r}.")
    window_ok = positive(
        "CIRCUIT_BREAKER.SLIDING_WINDOW_SIZE", breaker["SLIDING_WINDOW_SIZE"], integer=True
    )
    minimum_ok = positive(
        "CIRCUIT_BREAKER.MINIMUM_NUMBER_OF_CALLS", breaker["MINIMUM_NUMBER_OF_CALLS"], integer=True
    )
    if (
        window_ok
        and minimum_ok
        and breaker["SLIDING_WINDOW_TYPE"] != TIME_BASED  # a window of seconds holds any number
        and breaker["SLIDING_WINDOW_SIZE"] < breaker["MINIMUM_NUMBER_OF_CALLS"]
    ):
        bad(
            "CIRCUIT_BREAKER.SLIDING_WINDOW_SIZE",
            f"the window of {breaker['SLIDING_WINDOW_SIZE']} calls is smaller than "
            f"MINIMUM_NUMBER_OF_CALLS ({breaker['MINIMUM_NUMBER_OF_CALLS']}): the breaker could "
            "never trip.",
            "resilience.E005",
        )
    positive("CIRCUIT_BREAKER.SLOW_CALL_DURATION", breaker["SLOW_CALL_DURATION"])
    positive("CIRCUIT_BREAKER.WAIT_DURATION_IN_OPEN_STATE", breaker["WAIT_DURATION_IN_OPEN_STATE"])
    positive(
        "CIRCUIT_BREAKER.PERMITTED_CALLS_IN_HALF_OPEN_STATE",
        breaker["PERMITTED_CALLS_IN_HALF_OPEN_STATE"],
        integer=True,
    )
    storage = breaker["STORAGE"]
    if storage is not None and (
        not isinstance(storage, str) or urlparse(storage).scheme not in ("redis", "rediss", "unix")
    ):
        bad(
            "CIRCUIT_BREAKER.STORAGE",
            f"must be None or a redis:// URL, got {storage!r}.",
            "resilience.E006",
        )
    window_type = breaker["SLIDING_WINDOW_TYPE"]
    if window_type not in (COUNT_BASED, TIME_BASED):
        bad(
            "CIRCUIT_BREAKER.SLIDING_WINDOW_TYPE",
            f"must be {COUNT_BASED!r} (the last SLIDING_WINDOW_SIZE calls) or {TIME_BASED!r} "
            f"(the calls of the last SLIDING_WINDOW_SIZE seconds), got {window_type!r}.",
        )
    for path, value in (
        ("RETRY.RETRY_ON_RESULT", retry["RETRY_ON_RESULT"]),
        ("CIRCUIT_BREAKER.RECORD_FAILURE_ON_RESULT", breaker["RECORD_FAILURE_ON_RESULT"]),
    ):
        if value is not None:
            try:
                _predicate(value)
            except (ImportError, TypeError, ValueError) as exc:
                bad(path, f"cannot use {value!r}: {exc}")
    k = cfg["THROTTLE"]["K"]
    if k is not None and not (_number(k) and k >= 1):
        bad("THROTTLE.K", f"must be None (off) or a number >= 1, got {k!r}.")
    limiter = cfg["RATE_LIMITER"]
    limit = limiter["LIMIT_FOR_PERIOD"]
    if limit is not None:
        positive("RATE_LIMITER.LIMIT_FOR_PERIOD", limit, integer=True)
    positive("RATE_LIMITER.LIMIT_REFRESH_PERIOD", limiter["LIMIT_REFRESH_PERIOD"])
    positive("RATE_LIMITER.TIMEOUT_DURATION", limiter["TIMEOUT_DURATION"], allow_zero=True)
    for path, items in (
        ("CIRCUIT_BREAKER.IGNORE_EXCEPTIONS", breaker["IGNORE_EXCEPTIONS"]),
        ("RETRY.RETRY_ON_EXCEPTIONS", retry["RETRY_ON_EXCEPTIONS"]),
    ):
        if not isinstance(items, list | tuple):
            bad(path, "must be a list of exception classes or dotted paths.")
            continue
        for item in items:
            try:
                _exception_class(item)
            except (ImportError, TypeError, ValueError) as exc:
                bad(path, f"cannot use {item!r}: {exc}")

    positive("BULKHEAD.MAX_CONCURRENT_CALLS", bulkhead["MAX_CONCURRENT_CALLS"], integer=True)
    return problems


def _predicate(item) -> Callable[[Any], bool]:
    """A dotted path to a function of one argument (the attempt's result), or the function."""
    from django.utils.module_loading import import_string

    fn = import_string(item) if isinstance(item, str) else item
    if not callable(fn):
        raise TypeError(f"{item!r} is not callable.")
    return fn


def _exception_class(item) -> type[BaseException]:
    from django.utils.module_loading import import_string

    cls = import_string(item) if isinstance(item, str) else item
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"{item!r} is not an exception class.")
    return cls


SERVICES_SETTING = "RESILIENCE_SERVICES"
REDIS_SETTING = "RESILIENCE_REDIS"
TRUST_HEADER_SETTING = "RESILIENCE_TRUST_DEADLINE_HEADER"
REDIS_DEFAULTS = {"SOCKET_TIMEOUT": 0.05, "PROBE_INTERVAL": 0.2, "SYNC_INTERVAL": 0.5}


def services() -> dict:
    """``RESILIENCE_SERVICES``: service name -> base URL, for ``ServiceClient``."""
    return getattr(settings, SERVICES_SETTING, None) or {}


def trust_deadline_header() -> bool:
    """Whether ``DeadlineMiddleware`` honours ``X-Deadline-Remaining-Ms`` from callers.

    ``True`` (the default) for a service that only other services of the stack can reach;
    ``False`` at the edge, where anyone can send the header.
    """
    return getattr(settings, TRUST_HEADER_SETTING, True)


def redis_options() -> dict:
    raw = getattr(settings, REDIS_SETTING, None) or {}
    return {**REDIS_DEFAULTS, **raw} if isinstance(raw, dict) else raw


def link_options():
    """``RESILIENCE_REDIS`` as the ``LinkOptions`` of every shared breaker state."""
    from resilience.storage import LinkOptions

    options = redis_options()
    return LinkOptions(
        socket_timeout=float(options["SOCKET_TIMEOUT"]),
        probe_interval=float(options["PROBE_INTERVAL"]),
        sync_interval=float(options["SYNC_INTERVAL"]),
    )


def validate_redis() -> list[Problem]:
    options = redis_options()
    if not isinstance(options, dict):
        return [Problem("", f"{REDIS_SETTING} must be a dict.", "resilience.E008")]
    problems = []
    for key, value in options.items():
        if key not in REDIS_DEFAULTS:
            problem = _unknown("", key, REDIS_DEFAULTS)
            problems.append(Problem("", f"{REDIS_SETTING}: {problem.message}", "resilience.E008"))
        elif not (_number(value) and value > 0):
            problems.append(
                Problem(
                    "",
                    f"{REDIS_SETTING}[{key!r}] must be a number of seconds > 0, got {value!r}.",
                    "resilience.E008",
                )
            )
    return problems


def raw_policies() -> dict:
    value = getattr(settings, SETTING, None)
    return {} if value is None else value


def policy_names(raw: dict | None = None) -> list[str]:
    raw = raw_policies() if raw is None else raw
    return [name for name in raw if name != DEFAULT_ALIAS]


def validate(raw: dict | None = None) -> list[Problem]:
    """Every problem in ``RESILIENCE_POLICIES``, each naming the key at fault."""
    raw = raw_policies() if raw is None else raw
    if not isinstance(raw, dict):
        return [
            Problem(
                "",
                f"must be a dict of named policies, got {type(raw).__name__}.",
                "resilience.E002",
            )
        ]
    problems = _check_keys(raw)
    broken = {p.path.split(".")[0] for p in problems}
    if DEFAULT_ALIAS in broken:
        return problems  # every policy inherits the default: its values cannot be judged
    for name in [DEFAULT_ALIAS, *policy_names(raw)]:
        if name not in broken:
            problems.extend(_check_values(name, merged(raw, name)))
    return problems


def build_config(name: str, raw: dict | None = None) -> PolicyConfig:
    """The validated configuration of policy ``name``; ``ImproperlyConfigured`` if it has problems."""
    raw = raw_policies() if raw is None else raw
    problems = [p for p in validate(raw) if p.path.split(".")[0] in (name, DEFAULT_ALIAS, "")]
    if problems:
        raise ImproperlyConfigured("; ".join(str(p) for p in problems))
    cfg = merged(raw, name)
    timeout, retry = cfg["TIMEOUT"], cfg["RETRY"]
    breaker, bulkhead, limiter = cfg["CIRCUIT_BREAKER"], cfg["BULKHEAD"], cfg["RATE_LIMITER"]
    return PolicyConfig(
        name=name,
        enabled=cfg["ENABLED"],
        timeout=TimeoutConfig(
            connect=float(timeout["CONNECT"]),
            read=float(timeout["READ"]),
            minimum_time_left=float(timeout["MINIMUM_TIME_LEFT"]),
        ),
        deadline=float(cfg["DEADLINE"]),
        retry=RetryConfig(
            max_attempts=retry["MAX_ATTEMPTS"],
            backoff_initial=float(retry["BACKOFF_INITIAL"]),
            backoff_multiplier=float(retry["BACKOFF_MULTIPLIER"]),
            backoff_max=float(retry["BACKOFF_MAX"]),
            retry_on_status=frozenset(retry["RETRY_ON_STATUS"]),
            budget_ratio=float(retry["BUDGET_RATIO"]),
            budget_min_retries_per_second=float(retry["BUDGET_MIN_RETRIES_PER_SECOND"]),
            budget_window=float(retry["BUDGET_WINDOW"]),
            retry_on_exceptions=tuple(_exception_class(i) for i in retry["RETRY_ON_EXCEPTIONS"]),
            retry_on_result=_maybe(_predicate, retry["RETRY_ON_RESULT"]),
        ),
        circuit_breaker=BreakerConfig(
            failure_rate_threshold=float(breaker["FAILURE_RATE_THRESHOLD"]),
            sliding_window_size=breaker["SLIDING_WINDOW_SIZE"],
            minimum_number_of_calls=breaker["MINIMUM_NUMBER_OF_CALLS"],
            slow_call_duration=float(breaker["SLOW_CALL_DURATION"]),
            slow_call_rate_threshold=float(breaker["SLOW_CALL_RATE_THRESHOLD"]),
            wait_duration_in_open_state=float(breaker["WAIT_DURATION_IN_OPEN_STATE"]),
            permitted_calls_in_half_open_state=breaker["PERMITTED_CALLS_IN_HALF_OPEN_STATE"],
            storage=breaker["STORAGE"],
            ignore_exceptions=tuple(_exception_class(i) for i in breaker["IGNORE_EXCEPTIONS"]),
            sliding_window_type=breaker["SLIDING_WINDOW_TYPE"],
            record_failure_on_result=_maybe(_predicate, breaker["RECORD_FAILURE_ON_RESULT"]),
        ),
        bulkhead=BulkheadConfig(
            max_concurrent_calls=bulkhead["MAX_CONCURRENT_CALLS"],
            max_wait=float(bulkhead["MAX_WAIT"]),
        ),
        throttle_k=None if cfg["THROTTLE"]["K"] is None else float(cfg["THROTTLE"]["K"]),
        rate_limiter=None
        if limiter["LIMIT_FOR_PERIOD"] is None
        else RateLimiterConfig(
            limit_for_period=limiter["LIMIT_FOR_PERIOD"],
            limit_refresh_period=float(limiter["LIMIT_REFRESH_PERIOD"]),
            timeout_duration=float(limiter["TIMEOUT_DURATION"]),
        ),
    )


def _maybe(build, value):
    return None if value is None else build(value)
