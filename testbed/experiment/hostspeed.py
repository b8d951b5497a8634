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

For kinds whose steps are torch models the helper also times a small convolution on one
thread: its working set and kernels are a model's, not a loop's that lives in the first-level
cache, so it can see what the loop cannot (memory bandwidth, the shared cache). Loading torch
costs the run ~3 s before it starts, hence only there.

What "against the start" can and cannot say: on the 2-vCPU VM this was built on, a vCPU runs
at one of two speeds ~1.5x apart and switches between them within a second, whatever the
testbed does (bench/vcpu_modes.py; the host's other guests, which the guest cannot see: no
steal, no cycle counters). The start is a few reads in a fifth of a second, so it lands on
either speed; compare windows (a pilot with its run) or runs with each other by the raw rates'
means and the share of samples at the slow speed (`spin_per_cpu_s`, `conv_per_cpu_s`;
run.json's `host_speed`), not the start's ratio across runs.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time

from testbed.procs import cpu_jiffies

ITERATIONS = 20_000  # ~1-2 ms of one core: a few tenths of a percent of it each second
CONV = (32, 64)  # channels and side of the convolution's input: ~1.5 ms of one core


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


def conv_timer():
    """A function timing one 3x3 convolution (CONV) on one torch thread, in CPU seconds."""
    import torch

    torch.set_num_threads(1)
    channels, side = CONV
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))

    def timed() -> float:
        with torch.no_grad():
            t0 = time.thread_time()
            conv(x)
            return max(time.thread_time() - t0, 1e-6)
    for _ in range(10):  # the first calls pick kernels and allocate
        timed()
    return timed


class HostProbe:
    """One row per sample: the loop's speed (and the convolution's, with `torch`) relative to
    the start's (measured when the probe is made), and the machine's steal and busy shares
    since the previous sample."""

    def __init__(self, torch: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, *(["torch"] * torch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # measured as each sample is (three runs back to back: a run after a pause reads ~10%
        # slower than one after another), seven times ~20 ms apart: one sample reads 0.8-1.5x
        # another
        reads = []
        for _ in range(7):
            reads.append(self._rates())
            time.sleep(0.02)
        self.reference = _median(r[0] for r in reads)  # iterations of the loop per CPU-second
        self.conv_reference = _median(r[1] for r in reads)  # convolutions per CPU-second
        self.last = cpu_jiffies()
        self._early: list[tuple[float, dict]] = []  # (monotonic time, row) before the run
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    def watch(self, interval_s: float) -> HostProbe:
        """Sample on a thread of its own until `stop_watching`: the machine while the nodes
        are profiled (and a video run's pilot plays), which the run is then compared with."""
        def loop() -> None:
            while not self._watching.wait(interval_s):
                t = time.monotonic()
                self._early.append((t, self.sample(0.0)))
        self._watcher = threading.Thread(target=loop, name="hostprobe", daemon=True)
        self._watcher.start()
        return self

    def stop_watching(self) -> list[tuple[float, dict]]:
        """What `watch` sampled, as (monotonic time, row); the probe is then free to sample
        for the run."""
        self._watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        return self._early

    def _rates(self) -> tuple[float | None, float | None]:
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            loop, conv = self.proc.stdout.readline().split()
            return float(loop), float(conv) if conv != "-" else None
        except (OSError, ValueError):  # the helper is gone: the row says so with empty cells
            return None, None

    def sample(self, t_s: float) -> dict:
        rate, conv = self._rates()
        now = cpu_jiffies()
        stolen, idle, total = (a - b for a, b in zip(now, self.last, strict=True))
        self.last = now
        return {"t_s": t_s, "spin_per_cpu_s": round(rate) if rate else None,
                "speed_vs_start": _ratio(rate, self.reference),
                "conv_per_cpu_s": round(conv, 1) if conv else None,
                "conv_speed_vs_start": _ratio(conv, self.conv_reference),
                "steal_share": round(stolen / total, 4) if total else 0.0,
                "busy_share": round(1 - idle / total, 4) if total else 0.0}

    def close(self) -> None:
        self.stop_watching()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # the helper ends at the end of its input
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _median(values) -> float | None:
    values = list(values)
    return None if None in values else statistics.median(values)


def _ratio(rate: float | None, reference: float | None) -> float | None:
    return round(rate / reference, 3) if rate and reference else None


def _spread(prefix: str, speeds: list[float]) -> dict:
    deciles = statistics.quantiles(speeds, n=10) if len(speeds) >= 2 else [speeds[0]]
    return {f"{prefix}_median": round(statistics.median(speeds), 3),
            f"{prefix}_p10": round(deciles[0], 3), f"{prefix}_p90": round(deciles[-1], 3)}


def _raw(rows: list[dict], column: str) -> list[float]:
    return [r[column] for r in rows if r[column]]


def levels(rates: list[float]) -> tuple[float, float, float]:
    """This VM's rate per CPU-second sits at one of two levels ~1.5x apart, a vCPU switching
    between them within a second (bench/vcpu_modes.py): (slow level, fast level, the cut
    between them), the split of the sorted rates that leaves the least spread on each side.
    A median of such samples jumps from one level to the other as their shares cross a half;
    the mean and the slow share move smoothly."""
    xs = sorted(rates)
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    total, squares = sum(xs), sum(x * x for x in xs)
    best, below, below_sq = (float("inf"), 1), 0.0, 0.0
    for i in range(1, len(xs)):
        below, below_sq = below + xs[i - 1], below_sq + xs[i - 1] ** 2
        above, above_sq, n = total - below, squares - below_sq, len(xs) - i
        spread = below_sq - below * below / i + above_sq - above * above / n
        best = min(best, (spread, i))
    i = best[1]
    return statistics.median(xs[:i]), statistics.median(xs[i:]), (xs[i - 1] + xs[i]) / 2


def summary(probe: HostProbe, rows: list[dict]) -> dict:
    """run.json's `host_speed`: the spread of the machine's speeds over the run, its steal,
    its raw rates in the run beside those while the nodes were profiled (`setup`), and the
    share of samples at the slow one of the machine's two speeds (`levels`) in each."""
    setup = [r for r in rows if r.get("phase") == "setup"]
    rows = [r for r in rows if r.get("phase", "run") == "run"]
    speeds = [r["speed_vs_start"] for r in rows if r["speed_vs_start"]]
    if not speeds:
        return {}
    convs = [r["conv_speed_vs_start"] for r in rows if r["conv_speed_vs_start"]]
    raw = {}
    for column, digits in (("spin_per_cpu_s", 0), ("conv_per_cpu_s", 1)):
        run, before = _raw(rows, column), _raw(setup, column)
        if not run:
            continue
        # the raw rates compare runs with each other, and a run with its set-up: by the mean
        # (what a CPU-second bought on average), the median beside it for older readers
        raw[f"{column}_median"] = round(statistics.median(run), digits or None)
        raw[f"{column}_mean"] = round(statistics.fmean(run), digits or None)
        what = column.split("_")[0]
        slow, fast, cut = levels(run + before)
        raw[f"{what}_fast_over_slow"] = round(fast / slow, 3)
        raw[f"{what}_slow_share"] = round(sum(x < cut for x in run) / len(run), 3)
        if before:
            raw[f"{column}_setup_median"] = round(statistics.median(before), digits or None)
            raw[f"{column}_setup_mean"] = round(statistics.fmean(before), digits or None)
            raw[f"{what}_setup_slow_share"] = round(sum(x < cut for x in before) / len(before), 3)
            raw[f"{what}_run_over_setup"] = round(statistics.fmean(run)
                                                  / statistics.fmean(before), 3)
    return {"spin_per_cpu_s_at_start": round(probe.reference), **raw,
            **_spread("speed_vs_start", speeds),
            **(_spread("conv_speed_vs_start", convs) if convs else {}),
            "steal_share_mean": round(statistics.mean(r["steal_share"] for r in rows), 4)}


if __name__ == "__main__":  # the helper: one row of rates per line asked for, until its input ends
    timed = conv_timer() if sys.argv[1:] == ["torch"] else None
    spin_per_cpu_s(30)  # a fresh process's first runs are slower: not the machine's speed
    for _ in sys.stdin:
        conv = f"{1 / statistics.median(timed() for _ in range(3))}" if timed else "-"
        print(spin_per_cpu_s(), conv, flush=True)
