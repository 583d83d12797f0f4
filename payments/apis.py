from decimal import Decimal

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import services
from payments.exceptions import IdempotencyKeyMissing
from payments.models import Charge

MAX_KEY_LENGTH = 255


class ChargeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Charge
        fields = ["id", "order_id", "amount", "currency", "card_last4", "status", "created_at"]


class ChargeApi(APIView):
    class InputSerializer(serializers.Serializer):
        order_id = serializers.CharField(max_length=64)
        amount = serializers.DecimalField(
            max_digits=10, decimal_places=2, min_value=Decimal("0.01")
        )
        currency = serializers.RegexField(r"^[A-Z]{3}$", default="EUR")
        card_token = serializers.RegexField(r"^tok_[A-Za-z0-9_]{1,60}$")

    @extend_schema(
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)
        ],
        request=InputSerializer,
        responses={201: ChargeOutputSerializer},
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            raise IdempotencyKeyMissing()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.charge_create(idempotency_key=key, **data.validated_data)
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(
        parameters=[OpenApiParameter("order_id", str, OpenApiParameter.QUERY, required=True)],
        responses=ChargeOutputSerializer(many=True),
    )
    def get(self, request):
        order_id = request.query_params.get("order_id")
        if not order_id:
            raise serializers.ValidationError({"order_id": ["This query parameter is required."]})
        charges = Charge.objects.filter(order_id=order_id)
        return Response(ChargeOutputSerializer(charges, many=True).data)
