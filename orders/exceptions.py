from rest_framework import status
from rest_framework.exceptions import APIException


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used for a different order."


class OrderNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "order_not_found"
    default_detail = "No order with that id."


class ShowNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "show_not_found"
    default_detail = "No show with that id."


class InventoryUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "inventory_unavailable"
    default_detail = (
        "Seats cannot be reserved right now. Nothing was charged. The order is kept: send the "
        "same request again, with the same Idempotency-Key, to place it."
    )
    # Not a failure of orders: the gateway passes it on and its breaker ignores it.
    dependency = "inventory"
    retry_after = 2

    def __init__(self, order_id):
        super().__init__()
        self.extra = {"order_id": str(order_id)}
