from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from recommendations import selectors, services


class RecommendationSerializer(serializers.Serializer):
    show_id = serializers.IntegerField()
    score = serializers.IntegerField()


class RecommendationsOutputSerializer(serializers.Serializer):
    show_id = serializers.IntegerField()
    recommendations = RecommendationSerializer(many=True)


class RecommendationsApi(APIView):
    @extend_schema(responses=RecommendationsOutputSerializer)
    def get(self, request, show_id: int):
        limit = serializers.IntegerField(min_value=1, max_value=20).run_validation(
            request.query_params.get("limit", 5)
        )
        recommendations = selectors.recommendations_for(show_id=show_id, limit=limit)
        return Response({"show_id": show_id, "recommendations": recommendations})


class BookingApi(APIView):
    class InputSerializer(serializers.Serializer):
        order_id = serializers.CharField(max_length=64)
        email = serializers.EmailField()
        show_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)

    @extend_schema(request=InputSerializer, responses={201: None, 200: None})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.booking_record(**data.validated_data)
        return Response(
            {"recorded": created}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )
