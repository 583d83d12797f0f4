"""Every error answered as JSON with a stable ``code`` and a human ``message``; bad input is a 4xx."""

import logging

from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from resilience.exceptions import CircuitOpenError, OverloadedError, ResilienceError
from resilience.http import DEPENDENCY_HEADER

logger = logging.getLogger("booking.errors")


class DependencyUnavailable(exceptions.APIException):
    """A service this one depends on cannot answer now; trying again later may work."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "dependency_unavailable"
    default_detail = "A service this request depends on is unavailable. Try again shortly."


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc, context):
    dependency = getattr(exc, "dependency", None)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, ResilienceError):
        logger.warning("dependency unavailable: %s", exc)
        dependency = exc.policy or "unknown"
        retry_after = 5 if isinstance(exc, CircuitOpenError) else 1
        if isinstance(exc, OverloadedError) and exc.retry_after:
            retry_after = min(60, max(1, int(exc.retry_after)))  # the dependency's own word
        exc = DependencyUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if dependency is not None:
        # This service works; one it depends on does not. A caller's breaker ignores it.
        response[DEPENDENCY_HEADER] = dependency
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid", "message": _first_message(exc.detail), "errors": exc.detail}
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else "error"
        body = {"code": code, "message": str(getattr(exc, "detail", exc))}
        extra = getattr(exc, "extra", None)
        if extra:
            body.update(extra)
    response.data = body
    return response


def not_found(request, exception=None):
    return JsonResponse(
        {"code": "not_found", "message": f"No such resource: {request.path}"}, status=404
    )


def bad_request(request, exception=None):
    return JsonResponse(
        {"code": "bad_request", "message": "The request could not be understood."}, status=400
    )


def permission_denied(request, exception=None):
    return JsonResponse({"code": "permission_denied", "message": "Not allowed."}, status=403)


def server_error(request):
    return JsonResponse(
        {"code": "server_error", "message": "Something went wrong on our side."}, status=500
    )
