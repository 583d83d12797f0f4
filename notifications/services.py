"""Customer e-mail, at least once per (order, kind), with duplicates detectable.

The intent is committed before the message goes out: a ``Notification`` row, ``sending``, with
a stable Message-ID. Then the message is handed to the mail backend, then the row is marked
``sent``. A process that dies between the hand-over and the mark leaves the row ``sending``;
the next request for it (after ``NOTIFICATIONS_SEND_LEASE``) sends it again, with the same
Message-ID. That is the one window in which a customer can get a message twice, and the audit
(``notifications_ledger``) counts messages in the mail backend, not rows, so it shows.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from notifications.exceptions import SendInFlight
from notifications.models import Notification

logger = logging.getLogger(__name__)
SUBJECTS = {
    Notification.Kind.ORDER_CONFIRMED: "Your tickets: {show_title}",
    Notification.Kind.ORDER_REFUNDED: "Refunded: {show_title}",
}


def message_id(*, order_id: str, kind: str) -> str:
    """The same for every attempt to send this order's message of this kind."""
    return f"<{kind}.{order_id}@{settings.NOTIFICATIONS_MAIL_DOMAIN}>"


def _claim(notification: Notification) -> bool:
    """Take the next attempt to send (a conditional update): the row is ``sending`` and no
    attempt began within the lease."""
    stale = timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_SEND_LEASE)
    fresh = Notification.objects.filter(pk=notification.pk, status=Notification.Status.SENDING)
    return bool(
        fresh.filter(attempt_started_at__isnull=True).update(
            attempt_started_at=timezone.now(), attempts=F("attempts") + 1
        )
        or fresh.filter(attempt_started_at__lt=stale).update(
            attempt_started_at=timezone.now(), attempts=F("attempts") + 1
        )
    )


def notification_send(
    *, order_id: str, kind: str, email: str, context: dict
) -> tuple[Notification, bool]:
    """Send once per (order, kind), at least once: ``(notification, sent_now)``.

    ``SendInFlight`` while another request is sending it.
    """
    subject = SUBJECTS[kind].format(show_title=context.get("show_title", "your concert"))
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                order_id=order_id,
                kind=kind,
                email=email,
                subject=subject,
                message_id=message_id(order_id=order_id, kind=kind),
            )
    except IntegrityError:
        notification = Notification.objects.get(order_id=order_id, kind=kind)
        if notification.status == Notification.Status.SENT:
            return notification, False
    if not _claim(notification):
        raise SendInFlight()
    body = render_to_string(f"notifications/{kind}.txt", {**context, "order_id": order_id})
    message = EmailMessage(
        subject,
        body,
        None,
        [notification.email],
        headers={
            "Message-ID": notification.message_id,
            "X-Booking-Order": order_id,
            "X-Booking-Kind": kind,
        },
    )
    try:
        message.send()
    except Exception:
        # Not handed over: the next attempt may go at once.
        Notification.objects.filter(pk=notification.pk).update(attempt_started_at=None)
        raise
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.SENT, sent_at=timezone.now()
    )
    notification.refresh_from_db()
    return notification, True
