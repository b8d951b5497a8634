"""What one CPU-second of this machine is worth while its other vCPU is busy.

Nodes get CPU quotas, and the scheduler's model turns a quota into speed with profiles taken
minutes earlier. That only holds if a CPU-second buys the same work whatever else runs. A probe
pinned to vCPU 0 times the profile's calibration loop and a small torch convolution in CPU
time (hostspeed.py's probes), alone, beside a neighbour pinned to the other vCPU, and beside
one pinned to its own vCPU (a control: time-sharing one vCPU must not change the rate per
CPU-second). If the other vCPU's work slows the probe, the two vCPUs share a physical core
(SMT siblings) or its caches and memory bandwidth on the host, and a node's speed depends on
how busy the rest of the testbed is at that moment: a noise floor under every per-node
prediction, which profiling at the planned load can only partly match. Repetitions interleave
the cases, so that a change of the host's state hits them alike.

Usage: python bench/vcpu_pairs.py [--reps 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402

NEIGHBOURS = {  # each stops by itself after 60 s should the bench die before stopping it
    "loop": "import time\nend = time.monotonic() + 60\nx = 0\n"
            "while time.monotonic() < end:\n    for i in range(100000):\n"
            "        x = (x + i * i) & 0xFFFF\n",
    "convolution": "import time, torch\ntorch.set_num_threads(1)\n"
                   "c = torch.nn.Conv2d(64, 64, 3, padding=1).eval()\n"
                   "x = torch.randn(8, 64, 64, 64)\nend = time.monotonic() + 60\n"
                   "with torch.no_grad():\n    while time.monotonic() < end:\n        c(x)\n",
}
PROBE = """
import json, statistics, sys, time
from testbed.experiment.hostspeed import conv_timer, spin_per_cpu_s
conv = conv_timer()
end = time.monotonic() + float(sys.argv[1])
loops, convs = [], []
while time.monotonic() < end:
    loops.append(spin_per_cpu_s(1))
    convs.append(1.0 / conv())
print(json.dumps({"loop": statistics.median(loops), "conv": statistics.median(convs)}))
"""
ROOT = Path(__file__).resolve().parent.parent
CASES = [("alone", None, None), ("loop on the other vCPU", "loop", 1),
         ("convolution on the other vCPU", "convolution", 1),
         ("loop on the same vCPU (control)", "loop", 0)]


def pinned(code: list[str], cpu: int, **kw) -> subprocess.Popen:
    return subprocess.Popen(code, cwd=ROOT, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
                            **kw)


def measure(neighbour: str | None, cpu: int | None, seconds: float) -> dict[str, float]:
    other = pinned([sys.executable, "-c", NEIGHBOURS[neighbour]], cpu) if neighbour else None
    try:
        if other is not None:
            time.sleep(3.0 if neighbour == "convolution" else 0.3)  # torch loads first
        probe = pinned([sys.executable, "-c", PROBE, str(seconds)], 0, stdout=subprocess.PIPE,
                       text=True)
        out, _ = probe.communicate(timeout=seconds + 60)
        return json.loads(out)
    finally:
        if other is not None:
            other.send_signal(signal.SIGKILL)
            other.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    if os.cpu_count() != 2:
        print(f"note: {os.cpu_count()} CPUs; the bench pairs vCPU 0 with vCPU 1")
    got: dict[str, list[dict]] = {name: [] for name, _, _ in CASES}
    for rep in range(a.reps):
        for name, neighbour, cpu in CASES:
            got[name].append(measure(neighbour, cpu, a.seconds))
            print(f"rep {rep}: {name}: {got[name][-1]}", flush=True)
    base = {k: statistics.median(r[k] for r in got["alone"]) for k in ("loop", "conv")}
    rows = []
    for name, _, _ in CASES:
        loop = [r["loop"] / base["loop"] for r in got[name]]
        conv = [r["conv"] / base["conv"] for r in got[name]]
        rows.append([name, f"{statistics.median(loop):.2f}", f"{min(loop):.2f}-{max(loop):.2f}",
                     f"{statistics.median(conv):.2f}", f"{min(conv):.2f}-{max(conv):.2f}"])
    body = (f"A probe pinned to vCPU 0 times the calibration loop and a 32-channel 64x64 "
            f"convolution (one torch thread) in CPU time for {a.seconds:g} s; {a.reps} "
            f"repetitions per case, interleaved. Work per CPU-second against the probe alone "
            f"(alone: {base['loop'] / 1e6:.1f} M loop iterations and {base['conv']:.0f} "
            f"convolutions per CPU-second). Medians below 1.00 beside a neighbour on the "
            f"other vCPU would mean a CPU-second buys less work when the rest of the machine is "
            f"busy (shared physical core, caches or memory bandwidth), so that a node's speed "
            f"at a fixed quota depends on what the other nodes do at that moment; here they "
            f"are {' and '.join(r[1] + '/' + r[3] for r in rows[1:3])} (loop/convolution). "
            f"The ranges are single windows: the host's own neighbours move them.\n\n"
            + table(["case", "loop (median)", "loop range", "convolution (median)",
                     "convolution range"], rows))
    print(body)
    write_section("vcpu-pairs", "What a CPU-second is worth beside a busy vCPU", body)


if __name__ == "__main__":
    main()
