"""Settings for the test suite: the shared base with the stack's policies, SQLite unless DATABASE_URL says otherwise."""

from booking.settings.base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
