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
