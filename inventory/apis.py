from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import selectors, services
from inventory.models import SeatHold, Show

MAX_SEATS_PER_ORDER = 10


class ShowOutputSerializer(serializers.ModelSerializer):
    venue = serializers.CharField(source="venue.name")
    city = serializers.CharField(source="venue.city")
    seats_available = serializers.IntegerField()

    class Meta:
        model = Show
        fields = [
            "id",
            "title",
            "artist",
            "venue",
            "city",
            "starts_at",
            "price",
            "seats_total",
            "seats_held",
            "seats_sold",
            "seats_available",
        ]


class HoldOutputSerializer(serializers.ModelSerializer):
    # None for a tombstone (a final release that came before any hold).
    unit_price = serializers.DecimalField(
        source="show.price", max_digits=10, decimal_places=2, allow_null=True, default=None
    )
    show_title = serializers.CharField(source="show.title", allow_null=True, default=None)

    class Meta:
        model = SeatHold
        fields = [
            "order_id",
            "show_id",
            "show_title",
            "quantity",
            "unit_price",
            "status",
            "closed",
            "expires_at",
        ]


class ShowListApi(APIView):
    @extend_schema(responses=ShowOutputSerializer(many=True))
    def get(self, request):
        return Response(ShowOutputSerializer(selectors.show_list(), many=True).data)


class ShowDetailApi(APIView):
    @extend_schema(responses=ShowOutputSerializer)
    def get(self, request, show_id: int):
        return Response(ShowOutputSerializer(selectors.show_get(show_id=show_id)).data)


class HoldCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        order_id = serializers.CharField(max_length=64)
        show_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
        quantity = serializers.IntegerField(min_value=1, max_value=MAX_SEATS_PER_ORDER)
        rehold = serializers.BooleanField(required=False, default=False)

        class Meta:
            ref_name = "HoldCreateInput"

    @extend_schema(
        request=InputSerializer, responses={201: HoldOutputSerializer, 200: HoldOutputSerializer}
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hold, created = services.hold_create(**data.validated_data)
        hold = selectors.hold_get(order_id=hold.order_id)
        return Response(
            HoldOutputSerializer(hold).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class HoldDetailApi(APIView):
    @extend_schema(responses=HoldOutputSerializer)
    def get(self, request, order_id: str):
        return Response(HoldOutputSerializer(selectors.hold_get(order_id=order_id)).data)


class HoldConfirmApi(APIView):
    @extend_schema(request=None, responses=HoldOutputSerializer)
    def post(self, request, order_id: str):
        hold = services.hold_confirm(order_id=order_id)
        return Response(HoldOutputSerializer(selectors.hold_get(order_id=hold.order_id)).data)


class ReleaseOutputSerializer(HoldOutputSerializer):
    """The hold after the release, and what the release did (``outcome``)."""

    outcome = serializers.ChoiceField(choices=[r.value for r in services.Release])

    class Meta(HoldOutputSerializer.Meta):
        fields = [*HoldOutputSerializer.Meta.fields, "outcome"]


class HoldReleaseApi(APIView):
    class InputSerializer(serializers.Serializer):
        final = serializers.BooleanField(required=False, default=False)

        class Meta:
            ref_name = "HoldReleaseInput"

    @extend_schema(request=InputSerializer, responses=ReleaseOutputSerializer)
    def post(self, request, order_id: str):
        """Release the order's seats. ``final``: for good (the order failed); the hold is then
        closed, or a tombstone is left if none was taken yet. 409 ``hold_confirmed`` when the
        seats are sold: the order keeps them."""
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hold, outcome = services.hold_release(order_id=order_id, **data.validated_data)
        if hold is None:
            return Response({"order_id": order_id, "status": "absent", "outcome": outcome})
        hold = selectors.hold_get(order_id=order_id)
        hold.outcome = outcome
        return Response(ReleaseOutputSerializer(hold).data)
