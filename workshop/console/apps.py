from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class ConsoleConfig(AppConfig):
    name = "workshop.console"
    label = "console"
    verbose_name = "The control room"

    def ready(self) -> None:
        # Sessions (the chaos token of a signed-in browser) and events live in files: the
        # console has no database. Wherever it runs, their directory exists.
        Path(settings.SESSION_FILE_PATH).mkdir(parents=True, exist_ok=True)
