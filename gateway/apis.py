"""The public JSON API: what browsers, the storefront and load tests call on port 8000."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from booking.contracts import OrderInputSerializer, idempotency_key
from gateway import clients, services


class ShowNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "show_not_found"
    default_detail = "No show with that id."


class RecommendationsOutputSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["live", "cache", "popular"])
    shows = serializers.ListField(child=serializers.DictField())


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
    @extend_schema(responses=serializers.ListSerializer(child=serializers.DictField()))
    def get(self, request):
        return Response(services.shows_list())


class ShowDetailApi(APIView):
    @extend_schema(responses=serializers.DictField())
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
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)
        ],
        request=OrderInputSerializer,
        responses={201: serializers.DictField()},
    )
    def post(self, request):
        key = idempotency_key(request)
        # Refuse bad input here, before it costs a call to orders.
        data = OrderInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _passthrough(clients.orders_create(idempotency_key=key, payload=request.data))


class OrderDetailApi(APIView):
    @extend_schema(responses=serializers.DictField())
    def get(self, request, order_id):
        return _passthrough(clients.orders_get(str(order_id)))
