"""Counters and gauges under AWS/NetworkELB metric names, rendered in Prometheus text format.

No I/O. Counters are monotonic totals (Prometheus ``counter``); CloudWatch's per-minute sums are
their rates. Gauges (ActiveFlowCount, HealthyHostCount, UnHealthyHostCount) are computed by the
caller when the endpoint is scraped. Labels follow CloudWatch's dimensions (LoadBalancer,
AvailabilityZone, TargetGroup) where the simulator knows them.
"""

from __future__ import annotations

from typing import Iterable, Mapping

COUNTERS = ("NewFlowCount", "ProcessedBytes", "TCP_Client_Reset_Count", "TCP_ELB_Reset_Count",
            "TCP_Target_Reset_Count", "UnhealthyRoutingFlowCount", "IdleTimeoutFlowCount")
PREFIX = "aws_networkelb_"


class Metrics:
    """Plain counters keyed by AWS metric name (one instance per node)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def inc(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def render(per_node: Iterable[tuple[Mapping[str, str], Metrics]],
           gauges: Iterable[tuple[str, Mapping[str, str], float]]) -> str:
    """Prometheus exposition text: counters per node, then the gauges given."""
    nodes = list(per_node)
    lines: list[str] = []
    names = sorted({n for _, m in nodes for n in m.counts})
    for name in names:
        lines.append(f"# TYPE {PREFIX}{name} counter")
        for labels, m in nodes:
            lines.append(f"{PREFIX}{name}{_labels(labels)} {m.counts.get(name, 0)}")
    seen: set[str] = set()
    for name, labels, value in gauges:
        if name not in seen:
            lines.append(f"# TYPE {PREFIX}{name} gauge")
            seen.add(name)
        lines.append(f"{PREFIX}{name}{_labels(labels)} {value:g}")
    return "\n".join(lines) + "\n"
