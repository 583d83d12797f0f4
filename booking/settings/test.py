"""Settings for the test suite: every service's app in one database (SQLite unless DATABASE_URL)."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS, VAR_DIR, service_database

SERVICE_NAME = "test"
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
    "recommendations",
    "workshop",
]
ROOT_URLCONF = "booking.urls.test"
DATABASES = {"default": service_database("test")}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
EMAIL_FILE_PATH = VAR_DIR / "test-mail"
PAYMENTS_LATENCY_MS = (0, 0)

# Threads and the live server write concurrently: a real file (WAL, busy timeout), not the
# in-memory database whose shared cache fails with "table is locked" instead of waiting.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "db" / "test-suite.sqlite3")}

# The suite runs in one process where Django's test runner expects a connection per thread
# (transactions rolled back per test); the pool is for the stack's processes.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)
