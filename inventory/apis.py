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
    unit_price = serializers.DecimalField(source="show.price", max_digits=10, decimal_places=2)
    show_title = serializers.CharField(source="show.title")

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


class HoldReleaseApi(APIView):
    class InputSerializer(serializers.Serializer):
        final = serializers.BooleanField(required=False, default=False)

        class Meta:
            ref_name = "HoldReleaseInput"

    @extend_schema(request=InputSerializer, responses=HoldOutputSerializer)
    def post(self, request, order_id: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hold = services.hold_release(order_id=order_id, **data.validated_data)
        if hold is None:
            return Response({"order_id": order_id, "status": "absent"})
        return Response(HoldOutputSerializer(selectors.hold_get(order_id=order_id)).data)
