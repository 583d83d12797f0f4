from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from booking.contracts import IDEMPOTENCY_KEY_PARAMETER, OrderInputSerializer, order_request
from orders import services
from orders.exceptions import OrderNotFound
from orders.models import Order


class OrderInProgress(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "request_in_flight"
    default_detail = (
        "An order with this Idempotency-Key is being placed right now; ask again shortly."
    )


class OrderOutputSerializer(serializers.ModelSerializer):
    refunded = serializers.BooleanField(read_only=True)
    # Parked: staff settle it (the reason is for staff: manage.py orders inspect).
    needs_attention = serializers.BooleanField(source="parked", read_only=True)

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
            "refunded",
            "needs_attention",
            "created_at",
            "updated_at",
        ]


class OrderCreateApi(APIView):
    @extend_schema(
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        request=OrderInputSerializer,
        responses={201: OrderOutputSerializer, 200: OrderOutputSerializer},
    )
    def post(self, request):
        key, fields = order_request(request)
        try:
            order, created = services.order_place(idempotency_key=key, **fields)
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
