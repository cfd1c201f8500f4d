"""Target health: AWS's states and reason codes, with the descriptions DescribeTargetHealth gives
(API reference: TargetHealth; NLB-HC23, ALB-HC23). Both simulators' health state machines report
in these words."""

from __future__ import annotations

from typing import Final

INITIAL, HEALTHY, UNHEALTHY, UNUSED, DRAINING, UNAVAILABLE = (
    "initial", "healthy", "unhealthy", "unused", "draining", "unavailable")
STATES: Final = (INITIAL, HEALTHY, UNHEALTHY, UNUSED, DRAINING, UNAVAILABLE)

REGISTRATION_IN_PROGRESS: Final = "Elb.RegistrationInProgress"
INITIAL_HEALTH_CHECKING: Final = "Elb.InitialHealthChecking"
RESPONSE_CODE_MISMATCH: Final = "Target.ResponseCodeMismatch"
TIMEOUT: Final = "Target.Timeout"
FAILED_HEALTH_CHECKS: Final = "Target.FailedHealthChecks"
NOT_REGISTERED: Final = "Target.NotRegistered"
NOT_IN_USE: Final = "Target.NotInUse"
DEREGISTRATION_IN_PROGRESS: Final = "Target.DeregistrationInProgress"
INVALID_STATE: Final = "Target.InvalidState"
IP_UNUSABLE: Final = "Target.IpUnusable"
HEALTH_CHECK_DISABLED: Final = "Target.HealthCheckDisabled"
INTERNAL_ERROR: Final = "Elb.InternalError"

# Reason code -> the Description AWS gives with it.
DESCRIPTIONS: Final[dict[str, str]] = {
    REGISTRATION_IN_PROGRESS: "Target registration is in progress",
    INITIAL_HEALTH_CHECKING: "Initial health checks in progress",
    RESPONSE_CODE_MISMATCH: "Health checks failed with these codes: [{codes}]",
    TIMEOUT: "Request timed out",
    FAILED_HEALTH_CHECKS: "Health checks failed",
    NOT_REGISTERED: "Target is not registered to the target group",
    NOT_IN_USE: "Target group is not configured to receive traffic from the load balancer",
    DEREGISTRATION_IN_PROGRESS: "Target deregistration is in progress",
    INVALID_STATE: "Target is in the stopped or terminated state",
    IP_UNUSABLE: "The target IP address is reserved for use by a load balancer",
    HEALTH_CHECK_DISABLED: "Health checks are disabled",
    INTERNAL_ERROR: "Health checks failed due to an internal error",
}


def response_code_mismatch(code: int) -> str:
    """The description of Target.ResponseCodeMismatch for the code a check got."""
    return DESCRIPTIONS[RESPONSE_CODE_MISMATCH].format(codes=code)
