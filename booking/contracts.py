"""Request shapes that more than one service validates."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

MAX_SEATS_PER_ORDER = 10
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class IdempotencyKeyMissing(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "idempotency_key_missing"
    default_detail = (
        "An order needs an Idempotency-Key header (any unique string, up to 255 characters)."
    )


class OrderInputSerializer(serializers.Serializer):
    show_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_SEATS_PER_ORDER)
    email = serializers.EmailField(max_length=254)
    card_token = serializers.RegexField(
        r"^tok_[A-Za-z0-9_]{1,60}$", error_messages={"invalid": "A card token looks like tok_visa."}
    )


def idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise IdempotencyKeyMissing()
    return key


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Any unique string: the same key always means the same order.",
)


def order_request(request) -> tuple[str, dict]:
    """The Idempotency-Key and the validated order of a booking request, or a 400."""
    key = idempotency_key(request)
    data = OrderInputSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    return key, data.validated_data


ORDER_ID_QUERY = OpenApiParameter("order_id", str, OpenApiParameter.QUERY, required=True)


class _OrderIdQuery(serializers.Serializer):
    order_id = serializers.CharField(max_length=64)


def order_id_query(request) -> str:
    """The ``order_id`` query parameter, checked as a body field is: required, at most 64
    characters, and no NUL character (PostgreSQL cannot take one: a 400, not a 500)."""
    query = _OrderIdQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["order_id"]
