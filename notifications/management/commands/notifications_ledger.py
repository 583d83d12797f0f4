import email
import json
from pathlib import Path

from django.conf import settings
from django.core import mail
from django.core.management.base import BaseCommand

from notifications.models import Notification

# Django's file-based mail backend separates the messages of one file with this line.
SEPARATOR = "-" * 79


def handed_to_the_mail_backend() -> list[dict] | None:
    """Every message the mail backend took: from the files of the file-based backend, or the
    outbox of the memory one; ``None`` for a backend that keeps nothing to read (SMTP)."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("locmem.EmailBackend"):
        raw = [m.message().as_string() for m in getattr(mail, "outbox", [])]
    elif backend.endswith("filebased.EmailBackend"):
        raw = []
        for path in sorted(Path(settings.EMAIL_FILE_PATH).glob("*.log")):
            raw += [part for part in path.read_text().split(SEPARATOR) if part.strip()]
    else:
        return None
    messages = []
    for text in raw:
        message = email.message_from_string(text.strip("\n"))
        messages.append(
            {
                "message_id": message.get("Message-ID"),
                "order_id": message.get("X-Booking-Order"),
                "kind": message.get("X-Booking-Kind"),
                "to": message.get("To"),
            }
        )
    return messages


class Command(BaseCommand):
    help = "Every notification, and every message the mail backend took, as JSON (for audits)."

    def handle(self, *args, **options):
        return json.dumps(
            {
                "rows": list(
                    Notification.objects.order_by("id").values("order_id", "kind", "status")
                ),
                "mail": handed_to_the_mail_backend(),
            }
        )
