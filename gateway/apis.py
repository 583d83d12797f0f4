"""The public JSON API: what browsers, the storefront and load tests call on port 8000."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from booking.contracts import IDEMPOTENCY_KEY_PARAMETER, OrderInputSerializer, order_request
from gateway import clients, services
from resilience.exceptions import ResilienceError


class ShowNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "show_not_found"
    default_detail = "No show with that id."


class OrdersUnavailable(APIException):
    """The orders service did not answer: whether the order was placed is not known."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "orders_unavailable"
    default_detail = (
        "The booking service did not answer, so whether this order was placed is not known. "
        "Send the same request again with the same Idempotency-Key: an order is never placed "
        "or charged twice."
    )
    retry_after = 2


class ShowOutputSerializer(serializers.Serializer):
    """A show as inventory describes it (documentation of the passed-through answer)."""

    id = serializers.IntegerField()
    title = serializers.CharField()
    artist = serializers.CharField()
    venue = serializers.CharField()
    city = serializers.CharField()
    starts_at = serializers.DateTimeField()
    price = serializers.DecimalField(max_digits=10, decimal_places=2)
    seats_total = serializers.IntegerField()
    seats_held = serializers.IntegerField()
    seats_sold = serializers.IntegerField()
    seats_available = serializers.IntegerField()


class OrderOutputSerializer(serializers.Serializer):
    """An order as the orders service describes it."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(
        choices=["pending", "payment_pending", "paid", "confirmed", "refunding", "failed"]
    )
    show_id = serializers.IntegerField()
    show_title = serializers.CharField()
    quantity = serializers.IntegerField()
    email = serializers.EmailField()
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)
    currency = serializers.CharField()
    failure_code = serializers.CharField()
    refunded = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RecommendedShowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField(allow_null=True)
    artist = serializers.CharField(allow_null=True)


class RecommendationsOutputSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["live", "cache", "popular"])
    shows = RecommendedShowSerializer(many=True)


def _passthrough(response) -> Response:
    """An answer from another service, status and JSON body as they are."""
    try:
        body = response.json()
    except ValueError:
        body = {"code": "bad_gateway", "message": "The orders service answered without JSON."}
        return Response(body, status=status.HTTP_502_BAD_GATEWAY)
    passed = Response(body, status=response.status_code)
    for header in ("Idempotent-Replayed", "Retry-After"):
        if header in response.headers:
            passed[header] = response.headers[header]
    return passed


class ShowListApi(APIView):
    @extend_schema(responses=ShowOutputSerializer(many=True))
    def get(self, request):
        return Response(services.shows_list())


class ShowDetailApi(APIView):
    @extend_schema(responses=ShowOutputSerializer)
    def get(self, request, show_id: int):
        try:
            return Response(services.show_get(show_id))
        except clients.NotFound:
            raise ShowNotFound() from None


class ShowRecommendationsApi(APIView):
    @extend_schema(responses=RecommendationsOutputSerializer)
    def get(self, request, show_id: int):
        return Response(services.recommendations_for(show_id))


class OrderCreateApi(APIView):
    @extend_schema(
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        request=OrderInputSerializer,
        responses={201: OrderOutputSerializer, 200: OrderOutputSerializer},
    )
    def post(self, request):
        key, order = order_request(request)  # bad input is refused here, before it costs a call
        try:
            answer = clients.orders_create(idempotency_key=key, payload=order)
        except ResilienceError:
            raise OrdersUnavailable() from None
        return _passthrough(answer)


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderOutputSerializer)
    def get(self, request, order_id):
        return _passthrough(clients.orders_get(str(order_id)))
