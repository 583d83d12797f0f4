"""Every call orders makes to another service, each through that service's named policy."""

from dataclasses import dataclass
from decimal import Decimal

from booking.clients import service


@dataclass(frozen=True)
class Hold:
    show_title: str
    unit_price: Decimal
    status: str  # held, confirmed or released


class SeatsUnavailable(Exception):
    pass


class ShowNotFound(Exception):
    pass


class CardDeclined(Exception):
    pass


class ChargeCancelled(Exception):
    """The charge key was cancelled (by ``payments_cancel``): nothing was or will be charged."""


class ChargeRejected(Exception):
    """Payments refused the charge request itself (a 4xx other than a decline)."""


class HoldReleased(Exception):
    pass


class HoldClosed(Exception):
    """The order's hold was released for good (the order failed): it cannot be held again."""


class HoldConfirmed(Exception):
    """The order's seats are sold: a release is refused, and the order keeps them."""


class UnexpectedAnswer(Exception):
    """The other service answered with a status this client has no meaning for, one that may
    change: a 5xx, a 408/425/429, or a 409 for a request under the same key still in flight.
    Worth asking again later."""


class FinalAnswer(Exception):
    """The other service answered with a status that will not change however often it is
    asked (any other 4xx, or an answer that breaks the contract): the order is parked."""


# Statuses that may change if the same request is sent again later.
RETRYABLE = frozenset({408, 409, 425, 429})


def _unexpected(response) -> Exception:
    """Every answer this client has no meaning for, classified: retryable, or final."""
    what = (
        f"{response.request.method} {response.url} answered {response.status_code}: "
        f"{response.text[:200]}"
    )
    if response.status_code >= 500 or response.status_code in RETRYABLE:
        return UnexpectedAnswer(what)
    return FinalAnswer(what)


def inventory_hold(*, order_id: str, show_id: int, quantity: int, rehold: bool = False) -> Hold:
    """The order's hold, renewed if held; ``rehold``: held again if it expired (seats left)."""
    response = service("inventory").post(
        "/api/holds/",
        json={"order_id": order_id, "show_id": show_id, "quantity": quantity, "rehold": rehold},
        idempotency_key=f"hold-{order_id}",
    )
    if response.status_code in (200, 201):
        body = response.json()
        return Hold(
            show_title=body["show_title"],
            unit_price=Decimal(body["unit_price"]),
            status=body["status"],
        )
    code = _code(response)
    if response.status_code == 404:
        raise ShowNotFound()
    if response.status_code == 409 and code == "seats_unavailable":
        raise SeatsUnavailable()
    if response.status_code == 409 and code == "hold_closed":
        raise HoldClosed()
    if response.status_code == 409 and code == "hold_mismatch":
        raise FinalAnswer(f"inventory: the order's hold is for another show or quantity: {code}")
    raise _unexpected(response)


def inventory_confirm(*, order_id: str) -> None:
    response = service("inventory").post(
        f"/api/holds/{order_id}/confirm/", idempotency_key=f"confirm-{order_id}"
    )
    if response.status_code == 200:
        return
    if response.status_code == 409 and _code(response) == "hold_released":
        raise HoldReleased()
    raise _unexpected(response)


def inventory_release(*, order_id: str, final: bool = False) -> str:
    """Give the order's seats back (``final``: for good, the order failed); what inventory did
    (``released``, ``already_released``, ``tombstone``, ``absent``). ``HoldConfirmed`` if the
    seats are sold. A final release answers only once the hold is released and closed."""
    response = service("inventory").post(
        f"/api/holds/{order_id}/release/",
        json={"final": final},
        idempotency_key=f"release-{order_id}",
    )
    if response.status_code == 409 and _code(response) == "hold_confirmed":
        raise HoldConfirmed()
    if response.status_code != 200:
        raise _unexpected(response)
    body = response.json()
    if final and (body.get("status"), body.get("closed")) != ("released", True):
        raise FinalAnswer(f"inventory: a final release answered {body}")
    return body.get("outcome", "released")


def payments_charge(
    *, idempotency_key: str, order_id: str, amount: Decimal, currency: str, card_token: str
) -> int:
    """The charge id; ``CardDeclined``, ``ChargeCancelled`` or ``ChargeRejected`` for an answer
    that is final; ``ResilienceError``/``UnexpectedAnswer`` if it cannot be known now."""
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
    if response.status_code == 410:
        raise ChargeCancelled()
    if response.status_code in (400, 422):
        raise ChargeRejected(f"{response.status_code}: {response.text[:200]}")
    raise _unexpected(response)  # 409: a request under this key is still in flight


@dataclass(frozen=True)
class ChargeOutcome:
    state: str  # cancelled (nothing charged, ever), charged, declined
    charge_id: int | None


def payments_cancel(*, idempotency_key: str) -> ChargeOutcome:
    """Whether the charge under ``idempotency_key`` happened; if not, it never will."""
    response = service("payments").post(
        "/api/charges/cancel/",
        json={"idempotency_key": idempotency_key},
        idempotency_key=f"cancel-{idempotency_key}",
    )
    if response.status_code == 200:
        body = response.json()
        return ChargeOutcome(body["state"], (body.get("charge") or {}).get("id"))
    raise _unexpected(response)  # 409: still in flight; ask again later


def payments_refund(*, idempotency_key: str, charge_id: int, reason: str) -> int:
    """The refund id (the same for every repeat of the key)."""
    response = service("payments").post(
        "/api/refunds/",
        json={"charge_id": charge_id, "reason": reason},
        idempotency_key=idempotency_key,
    )
    if response.status_code in (200, 201):
        return response.json()["id"]
    raise _unexpected(response)


def payments_refunds(*, order_id: str) -> list[dict]:
    """The refunds payments made of the order's charges (none: never refunded)."""
    response = service("payments").get("/api/refunds/", params={"order_id": order_id})
    if response.status_code == 200:
        return response.json()
    raise _unexpected(response)


def notifications_send(*, order, kind: str = "order_confirmed") -> None:
    response = service("notifications").post(
        "/api/notifications/",
        json={
            "order_id": str(order.id),
            "kind": kind,
            "email": order.email,
            "show_title": order.show_title,
            "quantity": order.quantity,
            "amount": str(order.amount),
            "currency": order.currency,
        },
        idempotency_key=f"notify-{order.id}-{kind}",
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
