from rest_framework import status
from rest_framework.exceptions import APIException


class ShowNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "show_not_found"
    default_detail = "No show with that id."


class HoldNotFound(APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "hold_not_found"
    default_detail = "No seat hold for that order."


class SeatsUnavailable(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "seats_unavailable"
    default_detail = "Not enough seats left for this show."


class HoldMismatch(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "hold_mismatch"
    default_detail = "This order already holds a different show or quantity."


class HoldReleased(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "hold_released"
    default_detail = "The seats of this order were released and cannot be confirmed."


class HoldConfirmed(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "hold_confirmed"
    default_detail = "The seats of this order are sold and cannot be released."


class HoldClosed(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "hold_closed"
    default_detail = "The order of this hold released it for good; it cannot be held again."
