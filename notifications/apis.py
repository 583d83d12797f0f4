from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from booking.contracts import ORDER_ID_QUERY, order_id_query
from notifications import services
from notifications.models import Notification


class NotificationOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "order_id", "kind", "email", "subject", "message_id", "status", "sent_at"]


class NotificationApi(APIView):
    class InputSerializer(serializers.Serializer):
        order_id = serializers.CharField(max_length=64)
        kind = serializers.ChoiceField(choices=Notification.Kind.choices)
        email = serializers.EmailField()
        show_title = serializers.CharField(max_length=200)
        quantity = serializers.IntegerField(min_value=1, max_value=100)
        amount = serializers.DecimalField(max_digits=10, decimal_places=2)
        currency = serializers.CharField(max_length=3, default="EUR")

    @extend_schema(request=InputSerializer, responses={201: NotificationOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        notification, created = services.notification_send(
            order_id=fields.pop("order_id"),
            kind=fields.pop("kind"),
            email=fields.pop("email"),
            context=fields,
        )
        return Response(
            NotificationOutputSerializer(notification).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        parameters=[ORDER_ID_QUERY],
        responses=NotificationOutputSerializer(many=True),
    )
    def get(self, request):
        found = Notification.objects.filter(order_id=order_id_query(request))
        return Response(NotificationOutputSerializer(found, many=True).data)
