"""Settings shared by every service. Per-service modules import from here and add their apps."""

import json
from pathlib import Path

from booking.settings.env import database, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("BOOKING_VAR_DIR", str(BASE_DIR / "var")))

# Which service this process is; each service's settings module sets it.
SERVICE_NAME = "booking"

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-local-development-key-do-not-use-in-production")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "resilience",
    "chaos",
    "booking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Refuses at once what the process cannot serve in time (off unless RESILIENCE_ADMISSION
    # says ENABLED): before anything else spends time on the request.
    "resilience.admission.AdmissionMiddleware",
    # First after the basics: a fault makes the whole service slow or failing, as a real one would.
    "chaos.middleware.ChaosMiddleware",
    "resilience.middleware.DeadlineMiddleware",
    "django.middleware.common.CommonMiddleware",
    # The storefront's forms need both; DRF's API views are CSRF-exempt (no cookie auth).
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "booking.urls.base"
WSGI_APPLICATION = "booking.wsgi.application"


def service_database(name: str) -> dict:
    """This service's own database: ``DATABASE_URL``, else ``var/db/<name>.sqlite3``."""
    return database(str(VAR_DIR / "db" / f"{name}.sqlite3"))


DATABASES = {"default": service_database("booking")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if env_str("CACHE_URL"):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("CACHE_URL"),
            "KEY_PREFIX": env_str("BOOKING_NAMESPACE", "booking"),
            # The cache is a fallback: a hung Redis may cost a cache read 50 ms, never more.
            "OPTIONS": {
                "socket_connect_timeout": 0.05,
                "socket_timeout": 0.05,
                "retry": Retry(NoBackoff(), 0),
            },
        }
    }

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Static files (the storefront's, the API docs') are served by whitenoise, from the apps
# themselves when they were not collected.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "booking.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Concert booking",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "mail"
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "tickets@concert-booking.local")
EMAIL_TIMEOUT = 5  # an SMTP server that hangs holds a notifications thread this long at most
# Message-IDs are <kind.order@domain>: stable, so that a message sent twice is seen as one.
NOTIFICATIONS_MAIL_DOMAIN = env_str("NOTIFICATIONS_MAIL_DOMAIN", "concert-booking.local")
# A message still being sent this long after its attempt began was abandoned (its process
# died): the next request sends it again, with the same Message-ID. Above EMAIL_TIMEOUT.
NOTIFICATIONS_SEND_LEASE = env_int("NOTIFICATIONS_SEND_LEASE", 10)

# Base URLs of every service of the stack (the stack command binds each to its port).
SERVICE_URLS = {
    "gateway": env_str("GATEWAY_URL", "http://127.0.0.1:8000"),
    "orders": env_str("ORDERS_URL", "http://127.0.0.1:8001"),
    "payments": env_str("PAYMENTS_URL", "http://127.0.0.1:8002"),
    "inventory": env_str("INVENTORY_URL", "http://127.0.0.1:8003"),
    "notifications": env_str("NOTIFICATIONS_URL", "http://127.0.0.1:8004"),
    "recommendations": env_str("RECOMMENDATIONS_URL", "http://127.0.0.1:8005"),
    "console": env_str("CONSOLE_URL", "http://127.0.0.1:8080"),  # the control room
}

# Where ServiceClient("payments") finds payments: every service another one calls.
RESILIENCE_SERVICES = {
    name: url for name, url in SERVICE_URLS.items() if name not in ("gateway", "console")
}

# Shared circuit-breaker state: None keeps each process's state in memory.
RESILIENCE_STORAGE = env_str("RESILIENCE_STORAGE_URL") or None
RESILIENCE_ENABLED = env_bool("RESILIENCE_ENABLED", True)
# Redis keys of shared breaker state; each service adds its name, so that the gateway's and
# orders' breakers for inventory stay separate on one Redis.
RESILIENCE_NAMESPACE = env_str("BOOKING_NAMESPACE", "booking")

# One policy per downstream dependency of any service (a service only builds the ones it
# uses). Budgets nest: the gateway's deadline for orders covers orders' own calls.
RESILIENCE_POLICIES = {
    "default": {
        "ENABLED": RESILIENCE_ENABLED,
        "CIRCUIT_BREAKER": {"STORAGE": RESILIENCE_STORAGE},
    },
    "inventory": {
        "TIMEOUT": {"CONNECT": 0.5, "READ": 1.5},
        "DEADLINE": 2.5,  # a wait for a slot, then one whole attempt; a retry only after a fast failure
        "RETRY": {"MAX_ATTEMPTS": 2, "BACKOFF_INITIAL": 0.1, "BACKOFF_MAX": 0.5},
        "CIRCUIT_BREAKER": {"SLOW_CALL_DURATION": 1.0, "WAIT_DURATION_IN_OPEN_STATE": 10.0},
        # A burst queues briefly for a slot (bounded by the deadline); a hung inventory cannot
        # take more than 10 of a worker's 16 threads.
        "BULKHEAD": {"MAX_CONCURRENT_CALLS": 10, "MAX_WAIT": 0.5},
    },
    "payments": {
        "TIMEOUT": {"CONNECT": 1.0, "READ": 1.5},
        "DEADLINE": 4.0,
        "RETRY": {
            "MAX_ATTEMPTS": 3,
            "BACKOFF_INITIAL": 0.5,
            "BACKOFF_MULTIPLIER": 2.0,
            "BACKOFF_MAX": 2.0,
            "BUDGET_RATIO": 0.2,
        },
        "CIRCUIT_BREAKER": {
            "FAILURE_RATE_THRESHOLD": 50,
            "SLIDING_WINDOW_SIZE": 10,
            "MINIMUM_NUMBER_OF_CALLS": 5,
            "SLOW_CALL_DURATION": 1.5,
            "WAIT_DURATION_IN_OPEN_STATE": 30.0,
            "PERMITTED_CALLS_IN_HALF_OPEN_STATE": 3,
        },
        "BULKHEAD": {"MAX_CONCURRENT_CALLS": 10, "MAX_WAIT": 0.5},
    },
    "notifications": {
        "TIMEOUT": {"CONNECT": 0.3, "READ": 0.7},
        "DEADLINE": 1.0,
        "RETRY": {"MAX_ATTEMPTS": 1},
        "CIRCUIT_BREAKER": {"SLOW_CALL_DURATION": 0.5, "WAIT_DURATION_IN_OPEN_STATE": 15.0},
        "BULKHEAD": {"MAX_CONCURRENT_CALLS": 5},
    },
    "recommendations": {
        "TIMEOUT": {"CONNECT": 0.3, "READ": 0.7},
        "DEADLINE": 1.0,
        "RETRY": {"MAX_ATTEMPTS": 1},
        "CIRCUIT_BREAKER": {"SLOW_CALL_DURATION": 0.5, "WAIT_DURATION_IN_OPEN_STATE": 15.0},
        "BULKHEAD": {"MAX_CONCURRENT_CALLS": 10},
    },
    "orders": {
        "TIMEOUT": {"CONNECT": 0.5, "READ": 10.5},
        "DEADLINE": 11.0,
        # A retry could not fit in the deadline after a timed-out attempt; clients retry with their
        # Idempotency-Key instead (manage.py budgets: payments sees at most 3 attempts per order).
        "RETRY": {"MAX_ATTEMPTS": 1},
        "CIRCUIT_BREAKER": {"SLOW_CALL_DURATION": 8.0, "WAIT_DURATION_IN_OPEN_STATE": 10.0},
        "BULKHEAD": {"MAX_CONCURRENT_CALLS": 20},
    },
}


def _with_overrides(policies: dict, path: str | None) -> dict:
    """``RESILIENCE_POLICIES`` with a workshop's changes merged in, section by section: the
    JSON file ``manage.py stack policy`` writes, which the local stack names in
    ``RESILIENCE_POLICY_OVERRIDES`` (unset everywhere else)."""
    if not path or not Path(path).exists():
        return policies
    try:
        overrides = json.loads(Path(path).read_text())
    except ValueError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"RESILIENCE_POLICY_OVERRIDES: {path} is not JSON ({exc}); "
            "`manage.py stack policy reset` removes it"
        ) from exc
    merged = {name: {**entry} for name, entry in policies.items()}
    for name, changes in overrides.items():
        entry = merged.setdefault(name, {})
        for key, value in changes.items():
            if isinstance(value, dict):
                entry[key] = {**entry.get(key, {}), **value}
            else:
                entry[key] = value
    return merged


RESILIENCE_POLICIES = _with_overrides(RESILIENCE_POLICIES, env_str("RESILIENCE_POLICY_OVERRIDES"))

# How long seats stay held for an order that is not yet paid; renewed by every retry.
SEAT_HOLD_TTL = env_int("SEAT_HOLD_TTL", 1800)
# The simulated card processor's latency, milliseconds (uniform between the two).
PAYMENTS_LATENCY_MS = (
    env_int("PAYMENTS_LATENCY_MIN_MS", 20),
    env_int("PAYMENTS_LATENCY_MAX_MS", 80),
)
# A charge request still in flight this long after it started was abandoned by a process that
# died: another request under its key (or a cancel) takes it over. Above any charge's deadline.
PAYMENTS_IN_FLIGHT_LEASE = env_int("PAYMENTS_IN_FLIGHT_LEASE", 30)
# How the worker retries unsettled orders: first wait, cap, seconds.
ORDERS_SETTLE_BACKOFF = (
    env_int("ORDERS_SETTLE_BACKOFF_INITIAL", 1),
    env_int("ORDERS_SETTLE_BACKOFF_MAX", 30),
)
# An order still pending this long after it was created is no longer being placed by its
# request (which can take at most orders' worst case: manage.py budgets checks it): a replay
# of it places it again, and the worker looks at it (the safety-net task).
ORDERS_SAFETY_NET_DELAY = env_int("ORDERS_SAFETY_NET_DELAY", 15)
# No state lasts forever: a pending order this old was abandoned (failed: nothing charged);
# a payment pending this long is settled with payments (charged: paid; if not, never).
ORDERS_PENDING_MAX_AGE = env_int("ORDERS_PENDING_MAX_AGE", 300)
ORDERS_PAYMENT_PENDING_MAX_AGE = env_int("ORDERS_PAYMENT_PENDING_MAX_AGE", 900)
# Nothing retries forever: after this many passes of the worker (about an hour with the
# backoff above), an order that is still not settled is parked for staff (``manage.py orders``).
ORDERS_SETTLE_MAX_PASSES = env_int("ORDERS_SETTLE_MAX_PASSES", 150)
# The task worker serves its own /metrics on this port when set (compose, Kubernetes: its own
# container); on the local stack it writes into orders' metrics directory instead (0: off).
ORDERS_WORKER_METRICS_PORT = env_int("ORDERS_WORKER_METRICS_PORT", 0)
# The task worker: a heartbeat every ORDERS_WORKER_HEARTBEAT seconds; a worker silent for
# ORDERS_WORKER_DEAD_AFTER is dead and its running tasks are reaped. The reconciler looks for
# unsettled orders that no live task owns every ORDERS_RECONCILE_INTERVAL seconds.
ORDERS_WORKER_HEARTBEAT = env_int("ORDERS_WORKER_HEARTBEAT", 2)
ORDERS_WORKER_DEAD_AFTER = env_int("ORDERS_WORKER_DEAD_AFTER", 10)
ORDERS_RECONCILE_INTERVAL = env_int("ORDERS_RECONCILE_INTERVAL", 10)
# Touched by the worker's heartbeat thread at every beat, database or not: its liveness probe
# (`manage.py orders_worker_alive`) reads the file's age, never the database.
ORDERS_WORKER_ALIVE_FILE = env_str("ORDERS_WORKER_ALIVE_FILE", str(VAR_DIR / "orders-worker.alive"))
# How many task workers the local stack runs (`orders-worker`, `orders-worker-2`, ...): two
# show that their leases and fencing hold when one of them is paused or killed mid-task.
ORDERS_TASK_WORKERS = env_int("ORDERS_TASK_WORKERS", 1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# Fault injection (/chaos/): absent unless enabled, and always behind the bearer token.
CHAOS_ENABLED = env_bool("CHAOS_ENABLED", False)
CHAOS_TOKEN = env_str("CHAOS_TOKEN", "") or ""

# Production: DJANGO_ENV=production. Only the gateway faces users (TLS ends at the load
# balancer in front of it); the other services answer only on the private network.
PRODUCTION = env_str("DJANGO_ENV", "development") == "production"
if PRODUCTION:
    from django.core.exceptions import ImproperlyConfigured

    if SECRET_KEY.startswith("insecure-") or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(
            "DJANGO_ENV=production needs DJANGO_SECRET_KEY: 50+ random characters."
        )
    if CHAOS_ENABLED:
        raise ImproperlyConfigured("CHAOS_ENABLED cannot be set with DJANGO_ENV=production.")
    DEBUG = False
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Probes and Prometheus scrape over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^livez/$", r"^metrics$"]
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True


def internal_service_overrides() -> dict:
    """Settings of a service reached only over the private network, in plain HTTP.

    Redirecting it to HTTPS would break every caller, and HSTS means nothing without TLS.
    """
    if not PRODUCTION:
        return {}
    return {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SILENCED_SYSTEM_CHECKS": ["security.W004", "security.W008"],
    }
