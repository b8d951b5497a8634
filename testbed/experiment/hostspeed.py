"""How fast this machine computes while a run goes on, beside how fast it was at the start.

Predictions are priced on speeds profiled just before the run. On a shared VM the same
CPU-second can do a third less work some seconds later (other guests on the host's cores and
caches), and the nodes' steps then run long at the quota they were given: a miss the
scheduler's model cannot explain. Each sample times a short run of the profile's calibration
loop in CPU time (waiting for a core does not count, a slower core does) and reads the
hypervisor's steal, so every run shows whether its machine stayed the one it was profiled on.
The loop runs in a helper process of its own: in the driver it would share the interpreter
with the driver's threads and read their turns as a slow machine. It measures the machine the
driver runs on (on a cluster, not the other hosts).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time

from testbed.procs import cpu_jiffies

ITERATIONS = 20_000  # ~1-2 ms of one core: a few tenths of a percent of it each second


def spin(iterations: int) -> int:
    """The loop of workloads/dag_task.py's `spin`, which the profile's `spin_per_s` counts."""
    x = 0
    for i in range(iterations):
        x = (x + i * i) & 0xFFFF
    return x


def spin_per_cpu_s(repeats: int = 3) -> float:
    """Iterations of the loop per CPU-second of this thread (median of `repeats` short runs
    back to back)."""
    rates = []
    for _ in range(repeats):
        t0 = time.thread_time()
        spin(ITERATIONS)
        rates.append(ITERATIONS / max(time.thread_time() - t0, 1e-6))
    return statistics.median(rates)


class HostProbe:
    """One row per sample: the loop's speed relative to the start's (measured when the probe
    is made), and the machine's steal and busy shares since the previous sample."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        # measured as each sample is (three runs back to back: a run after a pause reads ~10%
        # slower than one after another), seven times ~20 ms apart: one sample reads 0.8-1.5x
        # another
        rates = []
        for _ in range(7):
            rates.append(self._rate())
            time.sleep(0.02)
        self.reference = None if None in rates else statistics.median(rates)
        self.last = cpu_jiffies()

    def _rate(self) -> float | None:
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            return float(self.proc.stdout.readline())
        except (OSError, ValueError):  # the helper is gone: the row says so with an empty cell
            return None

    def sample(self, t_s: float) -> dict:
        rate = self._rate()
        now = cpu_jiffies()
        stolen, idle, total = (a - b for a, b in zip(now, self.last, strict=True))
        self.last = now
        return {"t_s": t_s, "spin_per_cpu_s": round(rate) if rate else None,
                "speed_vs_start": round(rate / self.reference, 3)
                if rate and self.reference else None,
                "steal_share": round(stolen / total, 4) if total else 0.0,
                "busy_share": round(1 - idle / total, 4) if total else 0.0}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # the helper ends at the end of its input
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summary(reference: float | None, rows: list[dict]) -> dict:
    """run.json's `host`: the spread of the machine's speed over the run, and its steal."""
    speeds = [r["speed_vs_start"] for r in rows if r["speed_vs_start"]]
    if not speeds:
        return {}
    deciles = statistics.quantiles(speeds, n=10) if len(speeds) >= 2 else [speeds[0]]
    return {"spin_per_cpu_s_at_start": round(reference) if reference else None,
            "speed_vs_start_median": round(statistics.median(speeds), 3),
            "speed_vs_start_p10": round(deciles[0], 3),
            "speed_vs_start_p90": round(deciles[-1], 3),
            "steal_share_mean": round(statistics.mean(r["steal_share"] for r in rows), 4)}


if __name__ == "__main__":  # the helper: one rate per line asked for, until its input ends
    spin_per_cpu_s(30)  # a fresh process's first runs are slower: not the machine's speed
    for _ in sys.stdin:
        print(spin_per_cpu_s(), flush=True)
