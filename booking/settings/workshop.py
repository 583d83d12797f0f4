"""Settings of the workshop commands (``manage.py stack|scenario|lab``): no service of its own."""

from booking.settings.base import *  # noqa: F403
from booking.settings.base import INSTALLED_APPS
from booking.settings.env import env_str

INSTALLED_APPS = [*INSTALLED_APPS, "workshop"]

# The Prometheus `manage.py lab prometheus start` runs for lab 7 (docs/labs/07-*.md): not on
# 9090, where Debian's and Ubuntu's prometheus package runs the system's own.
LAB_PROMETHEUS_URL = env_str("LAB_PROMETHEUS_URL", "http://127.0.0.1:9099")
