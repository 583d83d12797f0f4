from rest_framework import status
from rest_framework.exceptions import APIException


class IdempotencyKeyMissing(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "idempotency_key_missing"
    default_detail = "A charge needs an Idempotency-Key header."


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used for a different request."


class RequestInFlight(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "request_in_flight"
    default_detail = "A request with this Idempotency-Key is still being processed."


class ChargeNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "charge_not_found"
    default_detail = "No charge with that id."


class ChargeNotRefundable(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "charge_not_refundable"
    default_detail = "Only a succeeded charge can be refunded."
