"""Everything that varies between machines and deployments, read from the environment here only."""

import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database(default_sqlite_path: str) -> dict:
    """``DATABASE_URL`` if set, else SQLite at the given path.

    SQLite is tuned for several gunicorn processes writing at once: WAL so readers never
    block the writer, a busy timeout instead of "database is locked", and IMMEDIATE
    transactions so that a transaction takes the write lock when it starts rather than
    failing to upgrade halfway through.
    """
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{default_sqlite_path}"
    config = dj_database_url.parse(url, conn_max_age=0)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # A bounded pool per process (psycopg-pool) instead of a new connection per request:
        # a service runs 2 processes x 16 threads, five services share one server, and
        # PostgreSQL's default max_connections is 100. A thread that finds the pool empty waits
        # up to DB_POOL_TIMEOUT seconds. Orders gives its connection back before each call to
        # another service (orders/clients.py), so threads waiting on payments hold none.
        config["OPTIONS"] = {
            "pool": {
                "min_size": 0,
                "max_size": env_int("DB_POOL_MAX_SIZE", 4),
                "timeout": env_int("DB_POOL_TIMEOUT", 5),
                "max_idle": 60,
            }
        }
    return config
