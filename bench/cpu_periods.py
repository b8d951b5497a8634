"""What a CPU quota's period costs a torch model's sustained speed, and how much that cost
varies: a process in a cgroup of a slow node's quota trains ResNet-50 (the training kind's
laptop scale: a tenth of its work) pass after pass, and the table gives the CPU seconds a
pass took beside a whole core's. Each quota slice starts after the node sat out the rest of
the period, with caches that the rest of the machine (and on a VM, the host) used meanwhile,
so short slices cost extra CPU; the spread over repetitions is the noise floor under any
per-device prediction made from a profile taken minutes earlier. Repetitions interleave
the periods, so that a change of the machine's state hits them alike.

Usage: python bench/cpu_periods.py [--reps 3] [--seconds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.net.cgroups import cpu_limits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CPU = 0.15
PERIODS_MS = [None, 10, 30, 100]  # None: a whole core, no quota
PASSES = r"""
import sys, time, torch
from split_models import blocks
torch.set_num_threads(1)
bs, shape = blocks("resnet50", width=0.1 ** 0.5)
x = torch.randn(32, *shape)
def one():
    h = x
    for k, b in enumerate(bs):
        h = h.detach().requires_grad_(k > 0)
        out = b(h)
        out.backward(torch.ones_like(out))
        h = out
one()
w0, c0, n = time.perf_counter(), time.process_time(), 0
while time.perf_counter() - w0 < float(sys.argv[1]):
    one()
    n += 1
print((time.process_time() - c0) / n, (time.perf_counter() - w0) / n)
"""


def in_cgroup(group: Path, seconds: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per pass."""
    out = subprocess.run(["sh", "-c", f'echo $$ > {group}/tasks; exec "$@"', "sh",
                          sys.executable, "-c", PASSES, str(seconds)],
                         capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "workloads")})
    cpu, wall = out.stdout.split()
    return float(cpu), float(wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=7.0)
    a = ap.parse_args()
    group = Path(f"/sys/fs/cgroup/cpu/testbed/bench-periods-{os.getpid()}")
    group.mkdir(parents=True)
    runs: dict = {p: [] for p in PERIODS_MS}
    try:
        for _ in range(a.reps):
            for p in PERIODS_MS:
                quota, period = (-1, 100_000) if p is None else (int(CPU * p * 1000), p * 1000)
                (group / "cpu.cfs_quota_us").write_text("-1")
                (group / "cpu.cfs_period_us").write_text(str(period))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
                runs[p].append(in_cgroup(group, a.seconds))
    finally:
        group.rmdir()
    core = statistics.median(c for c, _ in runs[None])
    rows = []
    for p in PERIODS_MS:
        cpus = [c for c, _ in runs[p]]
        name = "a whole core (no quota)" if p is None else \
            f"{CPU} core, {p}-ms periods" + (" (testbed)" if p * 1000 == cpu_limits(CPU)[1]
                                              else "")
        rows.append([name, f"{statistics.median(cpus) * 1000:.1f}",
                     f"{min(cpus) * 1000:.1f}-{max(cpus) * 1000:.1f}",
                     f"{statistics.median(cpus) / core:.2f}x",
                     f"{statistics.median(w for _, w in runs[p]):.3f}"])
    body = (f"One ResNet-50 training pass (batch 32, 32x32 inputs, a tenth of the work, one "
            f"thread) over and over for {a.seconds:g} s, {a.reps} repetitions per row, "
            "interleaved. CPU ms per pass: what the pass cost in CPU time (the quota only "
            "stretches it in wall time, the last column); against a whole core's, the extra a "
            "quota's slices cost."
            " Short periods keep a node that computes between network waits as slow as its quota "
            "(cpu-bursts above), and this is their price: every slice starts cold, the extra "
            "CPU varies with what the host runs, and a profile taken minutes before a run "
            "can miss the run's speed by as much.\n\n"
            + table(["node", "CPU ms per pass (median)", "range", "against a whole core",
                     "wall s per pass"], rows))
    write_section("cpu-periods", "CPU quota periods and a model's sustained speed", body)


if __name__ == "__main__":
    main()
