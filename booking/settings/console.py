"""The control room (``workshop.console``): its own service, never one that is faulted.

It owns no data (no database), keeps its sessions in files, and reads every other service over
HTTP. Its writes (faults, processes, scenarios) follow ``CHAOS_ENABLED`` and always need the
chaos token.
"""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import (
    CHAOS_ENABLED,
    PRODUCTION,
    VAR_DIR,
    env_bool,
    env_str,
    internal_service_overrides,
)

SERVICE_NAME = "console"
INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "workshop.console",
]
# Not the services' middleware: no chaos (it is never faulted), no deadline header.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "booking.urls.console"
DATABASES = {}
SESSION_ENGINE = "django.contrib.sessions.backends.file"
SESSION_FILE_PATH = VAR_DIR / "console" / "sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_SAMESITE = "Strict"

CONSOLE_WRITES_ENABLED = env_bool("CONSOLE_WRITES_ENABLED", CHAOS_ENABLED)
if PRODUCTION and CONSOLE_WRITES_ENABLED:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("CONSOLE_WRITES_ENABLED cannot be set with DJANGO_ENV=production.")
CONSOLE_POLL_INTERVAL = 1.0
# The local stack's supervisord, for process state and stop/start; absent on a platform that
# runs the processes itself (compose, Kubernetes).
CONSOLE_SUPERVISOR_SOCKET = env_str(
    "CONSOLE_SUPERVISOR_SOCKET", str(VAR_DIR / "stack" / "supervisor.sock")
)
globals().update(internal_service_overrides())
