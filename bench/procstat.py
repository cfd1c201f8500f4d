"""What /proc says about a contender's process: CPU time and peak memory (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), from /proc: robust against a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def memory_line(component: str, sim_mib: float, haproxy_mib: float) -> str:
    """`MEMORY <component> sim_peak_rss_mib=.. haproxy_peak_rss_mib=.. rss_ratio=..` (simulator / HAProxy)."""
    return (f"MEMORY {component} sim_peak_rss_mib={sim_mib:.1f} haproxy_peak_rss_mib={haproxy_mib:.1f} "
            f"rss_ratio={sim_mib / haproxy_mib:.2f}")


STEAL_WARN_SHARE = 0.05  # above this, other guests took enough of the CPU to move ratios by more than their noise


def cpu_times(stat_text: str | None = None) -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs, from the `cpu` line of /proc/stat (steal is field 8)."""
    text = Path("/proc/stat").read_text() if stat_text is None else stat_text
    fields = [int(f) for f in text.splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return fields[7] if len(fields) > 7 else 0, total


def steal_line(before: tuple[int, int], after: tuple[int, int]) -> str | None:
    """A warning when the hypervisor gave more than STEAL_WARN_SHARE of the CPU time to others, else None."""
    total = after[1] - before[1]
    share = (after[0] - before[0]) / total if total > 0 else 0.0
    if share <= STEAL_WARN_SHARE:
        return None
    return (f"STEAL {share * 100:.0f} % of the CPU time went to other virtual machines during the runs: "
            "req/s figures and ratios are unreliable; CPU per request and a quieter machine are better guides")
