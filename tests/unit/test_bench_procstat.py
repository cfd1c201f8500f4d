"""bench/procstat.py: the warning the benches print when other virtual machines took the CPU."""

from __future__ import annotations

from bench.procstat import cpu_times, steal_line

# The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice.
BEFORE = "cpu  81508 0 37421 1755852 1261 0 4126 7487 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def stat(user: int, idle: int, steal: int) -> str:
    return f"cpu  {user} 0 37421 {idle} 1261 0 4126 {steal} 500 0\n"


def test_cpu_times_reads_steal_and_the_total_without_guest_time() -> None:
    assert cpu_times(BEFORE) == (7487, 81508 + 37421 + 1755852 + 1261 + 4126 + 7487)
    assert cpu_times(stat(1, 1, 1))[1] == 1 + 37421 + 1 + 1261 + 4126 + 1  # guest 500 is inside user already


def test_a_machine_losing_a_sixth_of_its_cpu_gets_the_warning() -> None:
    # 2,000 jiffies in all over the runs, 328 of them stolen (seen on a lab machine on 2026-12-02)
    line = steal_line(cpu_times(BEFORE), cpu_times(stat(81508 + 1672, 1755852, 7487 + 328)))
    assert line is not None and line.startswith("STEAL 16 % of the CPU time")


def test_a_quiet_machine_gets_no_warning() -> None:
    assert steal_line(cpu_times(BEFORE), cpu_times(stat(81508 + 1950, 1755852, 7487 + 50))) is None  # 2.5 %
    assert steal_line((5, 100), (5, 100)) is None  # no time passed


def test_this_machine_has_a_readable_proc_stat() -> None:
    steal, total = cpu_times()
    assert 0 <= steal <= total and total > 0
