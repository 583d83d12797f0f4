from rest_framework import status
from rest_framework.exceptions import APIException


class SendInFlight(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "send_in_flight"
    default_detail = "This message is being sent right now; ask again shortly."
