from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from orders import services
from orders.exceptions import IdempotencyKeyMissing, OrderNotFound
from orders.models import Order

MAX_SEATS_PER_ORDER = 10
MAX_KEY_LENGTH = 255


class OrderInProgress(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "request_in_flight"
    default_detail = (
        "An order with this Idempotency-Key is being placed right now; ask again shortly."
    )


class OrderInputSerializer(serializers.Serializer):
    show_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_SEATS_PER_ORDER)
    email = serializers.EmailField(max_length=254)
    card_token = serializers.RegexField(
        r"^tok_[A-Za-z0-9_]{1,60}$", error_messages={"invalid": "A card token looks like tok_visa."}
    )


class OrderOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "show_id",
            "show_title",
            "quantity",
            "email",
            "amount",
            "currency",
            "failure_code",
            "created_at",
            "updated_at",
        ]


def idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise IdempotencyKeyMissing()
    return key


class OrderCreateApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)
        ],
        request=OrderInputSerializer,
        responses={201: OrderOutputSerializer, 200: OrderOutputSerializer},
    )
    def post(self, request):
        key = idempotency_key(request)
        data = OrderInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            order, created = services.order_place(idempotency_key=key, **data.validated_data)
        except services.OrderInProgress:
            raise OrderInProgress() from None
        response = Response(
            OrderOutputSerializer(order).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderOutputSerializer)
    def get(self, request, order_id):
        order = Order.objects.filter(pk=order_id).first()
        if order is None:
            raise OrderNotFound()
        return Response(OrderOutputSerializer(order).data)
