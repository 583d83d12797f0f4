from decimal import Decimal

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from booking.contracts import ORDER_ID_QUERY, order_id_query
from payments import services
from payments.exceptions import IdempotencyKeyMissing, RequestInFlight
from payments.models import Charge, Refund

MAX_KEY_LENGTH = 255
IDEMPOTENCY_KEY = OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)


def idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise IdempotencyKeyMissing()
    return key


class ChargeOutputSerializer(serializers.ModelSerializer):
    refunded = serializers.SerializerMethodField()

    class Meta:
        model = Charge
        fields = [
            "id",
            "order_id",
            "amount",
            "currency",
            "card_last4",
            "status",
            "refunded",
            "created_at",
        ]

    def get_refunded(self, charge) -> bool:
        return Refund.objects.filter(charge=charge).exists()


class ChargeApi(APIView):
    class InputSerializer(serializers.Serializer):
        order_id = serializers.CharField(max_length=64)
        amount = serializers.DecimalField(
            max_digits=10, decimal_places=2, min_value=Decimal("0.01")
        )
        currency = serializers.RegexField(r"^[A-Z]{3}$", default="EUR")
        card_token = serializers.RegexField(r"^tok_[A-Za-z0-9_]{1,60}$")

        class Meta:
            ref_name = "ChargeInput"

    @extend_schema(
        parameters=[IDEMPOTENCY_KEY],
        request=InputSerializer,
        responses={201: ChargeOutputSerializer},
    )
    def post(self, request):
        key = idempotency_key(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.charge_create(idempotency_key=key, **data.validated_data)
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(parameters=[ORDER_ID_QUERY], responses=ChargeOutputSerializer(many=True))
    def get(self, request):
        charges = Charge.objects.filter(order_id=order_id_query(request))
        return Response(ChargeOutputSerializer(charges, many=True).data)


class ChargeCancelApi(APIView):
    """Whether a charge key ever charged; if it did not, it never will (the key is cancelled)."""

    class InputSerializer(serializers.Serializer):
        idempotency_key = serializers.CharField(max_length=MAX_KEY_LENGTH)

        class Meta:
            ref_name = "ChargeCancelInput"

    class OutputSerializer(serializers.Serializer):
        state = serializers.ChoiceField(choices=["cancelled", "charged", "declined"])
        charge = ChargeOutputSerializer(allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = services.charge_cancel(**data.validated_data)
        except RequestInFlight:
            raise RequestInFlight(
                "A charge under this key is still being processed; ask again shortly."
            ) from None
        return Response({"state": result.state, "charge": result.charge})


class RefundOutputSerializer(serializers.ModelSerializer):
    order_id = serializers.CharField(source="charge.order_id")

    class Meta:
        model = Refund
        fields = ["id", "charge_id", "order_id", "amount", "reason", "created_at"]


class RefundApi(APIView):
    class InputSerializer(serializers.Serializer):
        charge_id = serializers.IntegerField(min_value=1)
        reason = serializers.CharField(max_length=64, required=False, default="")

        class Meta:
            ref_name = "RefundInput"

    @extend_schema(
        parameters=[IDEMPOTENCY_KEY],
        request=InputSerializer,
        responses={201: RefundOutputSerializer, 200: RefundOutputSerializer},
    )
    def post(self, request):
        key = idempotency_key(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refund, created = services.refund_create(idempotency_key=key, **data.validated_data)
        response = Response(
            RefundOutputSerializer(refund).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(parameters=[ORDER_ID_QUERY], responses=RefundOutputSerializer(many=True))
    def get(self, request):
        refunds = Refund.objects.filter(charge__order_id=order_id_query(request))
        return Response(RefundOutputSerializer(refunds, many=True).data)
