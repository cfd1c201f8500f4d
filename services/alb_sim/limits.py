"""AWS ALB quotas and enumerations the simulator enforces (ALB listener docs and quotas page)."""

from typing import Final

CONDITION_FIELDS: Final[tuple[str, ...]] = (
    "path-pattern", "host-header", "http-header", "http-request-method", "query-string", "source-ip",
)
# At most one condition of each of these types per rule; http-header and query-string may repeat.
SINGULAR_CONDITION_FIELDS: Final[tuple[str, ...]] = ("host-header", "http-request-method", "path-pattern", "source-ip")
MAX_CONDITION_VALUES: Final = 3      # match values per condition (OR'ed)
MAX_RULE_VALUES: Final = 5           # condition values (match evaluations) per rule
MAX_RULE_WILDCARDS: Final = 5        # '*' and '?' per rule
MAX_XFF_ADDRESSES: Final = 30        # more -> HTTP 463
FIXED_RESPONSE_CONTENT_TYPES: Final[tuple[str, ...]] = (
    "text/plain", "text/css", "text/html", "application/javascript", "application/json",
)
MAX_REQUEST_LINE: Final = 16 * 1024
MAX_SINGLE_HEADER: Final = 16 * 1024
MAX_REQUEST_HEADERS: Final = 64 * 1024
MAX_RESPONSE_HEADERS: Final = 32 * 1024
TARGET_CONNECT_TIMEOUT: Final = 10.0
# The lab's own bound, not an AWS quota (decisions.md #60): a client pipelining requests faster than
# the responses go out has its connection read no further while this many wait for their turn.
MAX_PIPELINED_REQUESTS: Final = 64
