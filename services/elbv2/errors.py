"""The ELBv2 API error: AWS's error code, an AWS-worded message and the HTTP status AWS answers with."""

from __future__ import annotations

# The ELBv2 API reference lists each action's errors with "HTTP Status Code: 400": every client
# error of the service is a 400, the not-found ones included (TargetGroupNotFound, ListenerNotFound,
# RuleNotFound, LoadBalancerNotFound). The admin APIs answer them the same way.
CLIENT_ERROR_STATUS = 400


class ApiError(Exception):
    """An ELBv2 API error: ``code`` (e.g. ValidationError) and an AWS-worded ``message``."""

    def __init__(self, code: str, message: str, status: int = CLIENT_ERROR_STATUS) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def validation_error(message: str) -> ApiError:
    return ApiError("ValidationError", message)


def constraint(member: str, value: object, rule: str) -> ApiError:
    """AWS's request-validation wording, e.g. for an interval of 1: ``1 validation error detected:
    Value '1' at 'healthCheckIntervalSeconds' failed to satisfy constraint: Member must have value
    greater than or equal to 5``."""
    return validation_error(f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy"
                            f" constraint: Member must {rule}")


def error_reply(exc: ApiError) -> tuple[int, dict[str, dict[str, str]]]:
    """(HTTP status, body) of an error answer from either simulator's admin API: AWS's error shape
    as the ELBv2 API's JSON clients read it, ``{"Error": {"Code": ..., "Message": ...}}``."""
    return exc.status, {"Error": {"Code": exc.code, "Message": exc.message}}
