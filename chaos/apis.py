"""``GET/PUT/DELETE /chaos/``: read, set and lift this service's fault. Bearer token required."""

import hmac

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from chaos import faults, store


class ChaosDisabled(NotFound):
    default_code = "not_found"
    default_detail = "No such resource: /chaos/"


class NoToken(APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_code = "chaos_token_not_configured"
    default_detail = (
        "CHAOS_ENABLED is set but CHAOS_TOKEN is empty: the chaos API refuses every request."
    )


class HeaderMatchSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    value = serializers.CharField(max_length=500)


class MatchSerializer(serializers.Serializer):
    path_prefix = serializers.RegexField(r"^/", max_length=200, required=False)
    method = serializers.ChoiceField(
        choices=["GET", "POST", "PUT", "PATCH", "DELETE"], required=False
    )
    header = HeaderMatchSerializer(required=False)


class FaultSerializer(serializers.Serializer):
    latency_ms = serializers.IntegerField(min_value=0, max_value=60_000, required=False)
    error_rate = serializers.FloatField(min_value=0, max_value=1, required=False)
    error_status = serializers.IntegerField(
        min_value=400, max_value=599, required=False, default=503
    )
    hang = serializers.BooleanField(required=False)
    fail_next = serializers.IntegerField(min_value=0, max_value=100_000, required=False)
    delay_response_ms = serializers.IntegerField(min_value=0, max_value=60_000, required=False)
    match = MatchSerializer(required=False)

    def validate(self, data):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {key: ["Unknown fault field."] for key in sorted(unknown)}
            )
        return data


def authorize(request) -> None:
    if not settings.CHAOS_ENABLED:
        raise ChaosDisabled()
    if not settings.CHAOS_TOKEN:
        raise NoToken()
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise AuthenticationFailed("The chaos API needs 'Authorization: Bearer <CHAOS_TOKEN>'.")
    if not hmac.compare_digest(header[len("Bearer ") :].encode(), settings.CHAOS_TOKEN.encode()):
        raise PermissionDenied("Wrong chaos token.")


def describe() -> dict:
    return {"service": settings.SERVICE_NAME, "fault": store.current()}


class ChaosApi(APIView):
    def get_authenticate_header(self, request):
        return 'Bearer realm="chaos"'

    @extend_schema(exclude=True)
    def get(self, request):
        authorize(request)
        return Response(describe())

    @extend_schema(exclude=True)
    def put(self, request):
        authorize(request)
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["A fault is a JSON object."]})
        fault = FaultSerializer(data=request.data)
        fault.is_valid(raise_exception=True)
        data = {k: v for k, v in fault.validated_data.items() if v not in (None, False, 0, {})}
        if set(data) <= {"error_status", "match"}:
            data = {}  # nothing that injects anything: no fault
        store.replace(data)
        faults.active.set(1 if data else 0)
        return Response(describe())

    @extend_schema(exclude=True)
    def delete(self, request):
        authorize(request)
        store.clear()
        faults.active.set(0)
        return Response(describe())
