"""Every call the gateway makes, each through the named policy of the service it calls."""

from booking.clients import service


class NotFound(Exception):
    pass


def inventory_shows() -> list[dict]:
    response = service("inventory").get("/api/shows/")
    response.raise_for_status()
    return response.json()


def inventory_show(show_id: int) -> dict:
    response = service("inventory").get(f"/api/shows/{show_id}/")
    if response.status_code == 404:
        raise NotFound()
    response.raise_for_status()
    return response.json()


def recommendations_live(show_id: int, *, fallback):
    """The live recommendations (a list), or whatever ``fallback(exc)`` answered instead (a dict)."""
    response = service("recommendations").get(f"/api/recommendations/{show_id}/", fallback=fallback)
    if isinstance(response, dict):
        return response
    if response.status_code != 200:
        return fallback(RuntimeError(f"recommendations answered {response.status_code}"))
    return response.json()["recommendations"]


def orders_create(*, idempotency_key: str, payload: dict):
    """The orders service's answer, passed through as it is (status and JSON body)."""
    return service("orders").post("/api/orders/", json=payload, idempotency_key=idempotency_key)


def orders_get(order_id: str):
    return service("orders").get(f"/api/orders/{order_id}/")
