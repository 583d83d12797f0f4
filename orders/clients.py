"""Every call orders makes to another service, each through that service's named policy."""

from dataclasses import dataclass
from decimal import Decimal

from booking.clients import service


@dataclass(frozen=True)
class Hold:
    show_title: str
    unit_price: Decimal


class SeatsUnavailable(Exception):
    pass


class ShowNotFound(Exception):
    pass


class CardDeclined(Exception):
    pass


class HoldReleased(Exception):
    pass


class UnexpectedAnswer(Exception):
    """The other service answered with a status this client has no meaning for."""


def _unexpected(response):
    return UnexpectedAnswer(
        f"{response.request.method} {response.url} answered {response.status_code}: "
        f"{response.text[:200]}"
    )


def inventory_hold(*, order_id: str, show_id: int, quantity: int) -> Hold:
    response = service("inventory").post(
        "/api/holds/",
        json={"order_id": order_id, "show_id": show_id, "quantity": quantity},
        idempotency_key=f"hold-{order_id}",
    )
    if response.status_code in (200, 201):
        body = response.json()
        return Hold(show_title=body["show_title"], unit_price=Decimal(body["unit_price"]))
    code = _code(response)
    if response.status_code == 404:
        raise ShowNotFound()
    if response.status_code == 409 and code == "seats_unavailable":
        raise SeatsUnavailable()
    raise _unexpected(response)


def inventory_confirm(*, order_id: str) -> None:
    response = service("inventory").post(
        f"/api/holds/{order_id}/confirm/", idempotency_key=f"confirm-{order_id}"
    )
    if response.status_code == 200:
        return
    if response.status_code == 409:
        raise HoldReleased()
    raise _unexpected(response)


def inventory_release(*, order_id: str) -> None:
    response = service("inventory").post(
        f"/api/holds/{order_id}/release/", idempotency_key=f"release-{order_id}"
    )
    if response.status_code != 200:
        raise _unexpected(response)


def payments_charge(
    *, idempotency_key: str, order_id: str, amount: Decimal, currency: str, card_token: str
) -> int:
    """The charge id; ``CardDeclined`` for a business refusal; ``ResilienceError`` if unavailable."""
    response = service("payments").post(
        "/api/charges/",
        json={
            "order_id": order_id,
            "amount": str(amount),
            "currency": currency,
            "card_token": card_token,
        },
        idempotency_key=idempotency_key,
    )
    if response.status_code == 201:
        return response.json()["id"]
    if response.status_code == 402:
        raise CardDeclined()
    raise _unexpected(response)


def notifications_send(*, order) -> None:
    response = service("notifications").post(
        "/api/notifications/",
        json={
            "order_id": str(order.id),
            "kind": "order_confirmed",
            "email": order.email,
            "show_title": order.show_title,
            "quantity": order.quantity,
            "amount": str(order.amount),
            "currency": order.currency,
        },
        idempotency_key=f"notify-{order.id}",
    )
    if response.status_code not in (200, 201):
        raise _unexpected(response)


def recommendations_record(*, order) -> None:
    response = service("recommendations").post(
        "/api/bookings/",
        json={"order_id": str(order.id), "email": order.email, "show_id": order.show_id},
        idempotency_key=f"booking-{order.id}",
    )
    if response.status_code not in (200, 201):
        raise _unexpected(response)


def _code(response) -> str | None:
    try:
        return response.json().get("code")
    except ValueError:
        return None
