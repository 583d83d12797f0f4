from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from notifications.models import Notification


def notification_send(
    *, order_id: str, kind: str, email: str, context: dict
) -> tuple[Notification, bool]:
    """Send once per (order, kind); a repeat returns the first and ``False``.

    The row and the email go together: the row commits only after the mail backend accepted
    the message, so a failed send leaves nothing behind and a retry sends it.
    """
    existing = Notification.objects.filter(order_id=order_id, kind=kind).first()
    if existing is not None:
        return existing, False
    subject = f"Your tickets: {context.get('show_title', 'your concert')}"
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                order_id=order_id, kind=kind, email=email, subject=subject
            )
            body = render_to_string(f"notifications/{kind}.txt", {**context, "order_id": order_id})
            send_mail(subject, body, None, [email])
    except IntegrityError:
        return Notification.objects.get(order_id=order_id, kind=kind), False
    return notification, True
