"""How fast a CPU-limited node computes between pauses (waiting for the network), by the CFS
period of its quota: 100 ms (Mininet's CPULimitedHost and Docker's --cpus), 33 ms (5-ms
slices at this quota, which would cost less extra CPU per slice: bench/cpu_periods.py) and the
testbed's 10 ms (testbed/net/cgroups.py, cpu_limits). A process in a 0.15-core cgroup repeats
a burst of pure-Python work (W ms at a whole core's speed) then a sleep of random length (so
that bursts start at every phase of the period); the table gives a burst's mean wall time
beside the ideal W / 0.15 of a node that is 0.15 of a core always.

Usage: python bench/cpu_bursts.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.net.cgroups import cpu_limits  # noqa: E402

CPU = 0.15
BUSY = (450, 0, 2)  # busy all the time: the node's sustained speed under each period
CASES = [(2, 50, 40), (5, 80, 40), (20, 80, 30), (50, 100, 20)]  # (work ms, mean sleep ms, n)
# 33 ms: the period that would give a 0.15-core node 5-ms slices, as cpu_periods.py suggests
PERIODS = [100_000, 33_000, None]  # None: the testbed's own (cpu_limits)
SPIN = "def spin(k):\n    x = 0\n    for i in range(k):\n        x += i * i\n"
BURSTS = SPIN + r"""
import random, sys, time
k, sleep_s, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rng, walls = random.Random(1), []
for _ in range(n):
    time.sleep(sleep_s * rng.uniform(0.5, 1.5))
    t = time.perf_counter(); spin(k); walls.append(time.perf_counter() - t)
print(sum(walls) / n)
"""


def per_iteration() -> float:
    """Seconds per loop iteration at a whole core (this process, no quota)."""
    scope: dict = {}
    exec(SPIN, scope)
    scope["spin"](500_000)
    t = time.perf_counter()
    scope["spin"](2_000_000)
    return (time.perf_counter() - t) / 2_000_000


def in_cgroup(group: Path, args: list[str]) -> float:
    out = subprocess.run(["sh", "-c", f'echo $$ > {group}/tasks; exec "$@"', "sh",
                          sys.executable, "-c", BURSTS, *args],
                         capture_output=True, text=True, check=True, timeout=120)
    return float(out.stdout)


def main() -> None:
    per = per_iteration()
    group = Path(f"/sys/fs/cgroup/cpu/testbed/bench-bursts-{os.getpid()}")
    group.mkdir(parents=True)
    walls: dict = {}
    try:
        for period in PERIODS:
            quota, per_us = (int(CPU * period), period) if period else cpu_limits(CPU)
            (group / "cpu.cfs_period_us").write_text(str(per_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
            for work_ms, sleep_ms, n in (BUSY, *CASES):
                walls[per_us, work_ms] = in_cgroup(group, [str(int(work_ms / 1000 / per)),
                                                           str(sleep_ms / 1000), str(n)])
    finally:
        group.rmdir()
    periods = sorted({p for p, _ in walls}, reverse=True)
    slow = {p: walls[p, BUSY[0]] / BUSY[0] for p in periods}  # wall s per ms of work, busy
    rows = [["busy all the time (sustained)", *(f"{walls[p, BUSY[0]] * 1000:.0f} (1.0x)"
                                                 for p in periods)]]
    for work_ms, sleep_ms, _ in CASES:
        rows.append([f"{work_ms} ms after {sleep_ms / 2:g}-{sleep_ms * 1.5:g} ms asleep",
                     *(f"{walls[p, work_ms] * 1000:.1f} "
                       f"({slow[p] * work_ms / walls[p, work_ms]:.1f}x)" for p in periods)])
    body = (f"A process in a {CPU}-core cgroup (cgroup v1) alternates a burst of pure-Python "
            "work with a sleep of random length (bursts start at every phase of the period). "
            "Each cell: a burst's mean wall time in ms and, in brackets, how much faster that "
            "is than the same work at the node's sustained speed under that period (first "
            "row: the work of a 450-ms burst at a whole core, with no pauses). 1.0x is a node "
            f"that is always as slow as its quota says. The kernel checks quotas at its tick "
            "(CONFIG_HZ=250 here: 4 ms), so bursts under a tick run at full speed with any "
            "period. A longer period makes a slice cheaper (cpu-periods below) but lets longer "
            "bursts run at a whole core's speed.\n\n"
            + table(["burst (work at a whole core's speed)",
                     *(f"{p // 1000}-ms periods{' (testbed)' if p == cpu_limits(CPU)[1] else ''}"
                       " ms" for p in periods)], rows))
    write_section("cpu-bursts", "CPU quotas and bursts of work between network waits", body)


if __name__ == "__main__":
    main()
