"""How steady one CPU-second of this machine is from one moment to the next, and what that
leaves for any prediction priced on a measurement taken seconds before the run.

A probe alternates between the vCPUs, timing the profile's calibration loop in CPU time on
each for a short window (waiting for a core does not count; a slower core does). On a shared
VM the rate per CPU-second is not one number with noise around it: it can jump between levels
as the host places the vCPU on busier or quieter physical cores, invisible to the guest (steal
stays at zero, and this VM exposes no cycle counters). The bench reports the levels, how long
each lasts, and the ratio of the mean rate over `--pilot` seconds to that over the `--run`
seconds right after, for every start second: that ratio is what a node's measured over
predicted step time reads when the prediction was priced perfectly on the window before. A
floor under per-node fidelity that no model in the testbed can lower.

Usage: python bench/vcpu_modes.py [--seconds 180] [--window 0.2] [--pilot 10 20] [--run 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from itertools import groupby
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.experiment.hostspeed import levels, spin  # noqa: E402

CHUNK = 20_000  # iterations timed at a time: ~1-2 ms, so a window holds many


def sample(seconds: float, window: float, cpus: list[int]) -> list[tuple[float, int, float]]:
    """(seconds since start, vCPU, loop iterations per CPU-second) per window, the vCPUs in
    turn."""
    out, start, k = [], time.monotonic(), 0
    while (now := time.monotonic() - start) < seconds:
        cpu = cpus[k % len(cpus)]
        os.sched_setaffinity(0, {cpu})
        t0, done = time.thread_time(), 0
        while time.monotonic() - start - now < window:
            spin(CHUNK)
            done += CHUNK
        out.append((now, cpu, done / max(time.thread_time() - t0, 1e-6)))
        k += 1
    return out


def window_mean(samples: list[tuple[float, int, float]], a: float, b: float) -> float:
    inside = [r for t, _, r in samples if a <= t < b]
    return statistics.fmean(inside) if inside else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--window", type=float, default=0.2)
    ap.add_argument("--pilot", type=float, nargs="+", default=[10.0, 20.0],
                    help="lengths of the window priced on, s")
    ap.add_argument("--run", type=float, default=20.0, help="the window predicted, s")
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    samples = sample(a.seconds, a.window, cpus)
    slow, fast, cut = levels([r for _, _, r in samples])
    rows = []
    for cpu in cpus:
        mine = [r for _, c, r in samples if c == cpu]
        flags = [r < cut for r in mine]
        slow_runs = [len(list(run)) for slow_now, run in groupby(flags) if slow_now]
        rows.append([f"vCPU {cpu}", str(len(mine)), f"{statistics.median(mine) / 1e6:.1f}",
                     f"{min(mine) / 1e6:.1f}-{max(mine) / 1e6:.1f}",
                     f"{sum(flags) / len(mine):.0%}",
                     f"{statistics.median(slow_runs) * a.window * len(cpus):.1f}"
                     if slow_runs else "-"])
    # do the vCPUs slow down together (the host's clock) or each on its own (its core's
    # neighbours)? Neighbouring windows on different vCPUs at the same level, against chance
    flags = [(c, r < cut) for _, c, r in samples]
    pairs = [(a, b) for (ca, a), (cb, b) in zip(flags, flags[1:], strict=False) if ca != cb]
    together = sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")
    share = sum(f for _, f in flags) / len(flags)
    chance = share ** 2 + (1 - share) ** 2
    floors = []
    for pilot in a.pilot:  # the same start seconds for every pilot length: comparable
        ratios = []
        for s in range(int(a.seconds - max(a.pilot) - a.run) + 1):
            before = window_mean(samples, s + max(a.pilot) - pilot, s + max(a.pilot))
            after = window_mean(samples, s + max(a.pilot), s + max(a.pilot) + a.run)
            ratios.append(before / after)  # measured / predicted step time, priced on before
        within = sum(0.9 <= x <= 1.1 for x in ratios) / len(ratios)
        floors.append([f"{pilot:g} s", f"{min(ratios):.2f}-{max(ratios):.2f}",
                       f"{statistics.median(ratios):.2f}", f"{within:.0%}", str(len(ratios))])
    per_10s = [window_mean(samples, s, s + 10) for s in range(0, int(a.seconds) - 9, 10)]
    body = (
        f"A probe alternating between the {len(cpus)} vCPUs times the calibration loop "
        f"(hostspeed.py's `spin`) in CPU time, {a.window:g} s at a time, for {a.seconds:g} s "
        f"({len(samples)} windows); rates in million iterations per CPU-second. The windows "
        f"fall into two levels: slow {slow / 1e6:.1f} and fast {fast / 1e6:.1f} "
        f"({fast / slow:.2f}x), split at {cut / 1e6:.1f}. Successive 10-s means: "
        f"{min(per_10s) / 1e6:.1f}-{max(per_10s) / 1e6:.1f}. Back-to-back windows on the two "
        f"vCPUs are at the same level {together:.0%} of the time against {chance:.0%} by "
        f"chance. A step priced perfectly on the mean speed of the window before (the "
        f"pilot) and run in the {a.run:g} s right after it reads its machine's speed "
        f"then over its speed in the pilot: the floor under per-node and per-stream "
        f"fidelity of predictions made before a run, on this machine at that hour (start "
        f"seconds overlap; every pilot length ends at the same seconds).\n\n"
        + table(["pilot", f"measured / predicted over the next {a.run:g} s", "median",
                 "within 0.9-1.1", "start seconds"], floors) + "\n\n"
        + table(["vCPU", "windows", "median", "range", "slow share",
                 "median slow spell, s"], rows))
    print(body)
    write_section("vcpu-modes", "How steady a CPU-second is from one moment to the next", body)


if __name__ == "__main__":
    main()
