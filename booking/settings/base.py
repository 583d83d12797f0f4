"""Settings shared by every service. Per-service modules import from here and add their apps."""

from pathlib import Path

from booking.settings.env import database, env_bool, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("BOOKING_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-local-development-key-do-not-use-in-production")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "rest_framework",
    "resilience",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "resilience.middleware.DeadlineMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "booking.urls"
WSGI_APPLICATION = "booking.wsgi.application"

DATABASES = {"default": database(str(VAR_DIR / "db.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}

# Base URLs of every service, so that ServiceClient("payments") knows where payments lives.
SERVICES = {
    "gateway": env_str("GATEWAY_URL", "http://127.0.0.1:8000"),
    "orders": env_str("ORDERS_URL", "http://127.0.0.1:8001"),
    "payments": env_str("PAYMENTS_URL", "http://127.0.0.1:8002"),
    "inventory": env_str("INVENTORY_URL", "http://127.0.0.1:8003"),
    "notifications": env_str("NOTIFICATIONS_URL", "http://127.0.0.1:8004"),
    "recommendations": env_str("RECOMMENDATIONS_URL", "http://127.0.0.1:8005"),
}

# Shared circuit-breaker state: None keeps each process's state in memory.
RESILIENCE_STORAGE = env_str("RESILIENCE_STORAGE_URL") or None
RESILIENCE_ENABLED = env_bool("RESILIENCE_ENABLED", True)

RESILIENCE_POLICIES = {
    "default": {
        "ENABLED": RESILIENCE_ENABLED,
        "CIRCUIT_BREAKER": {"STORAGE": RESILIENCE_STORAGE},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
