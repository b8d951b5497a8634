"""EdgeSplit (thesis ch. 4) at the thesis's sizes with the round-time model (eq. 4.5) driven by
per-block forward/backward times measured here on one core, side by side with its table 4.4
and figure 4.10, and Algorithm 6's decision time over 10-100 devices (its figure 4.11).

Set-up as the thesis describes it: 8 (or 20) devices of three kinds, 1, 3 and 5 cores (we
take a node with k cores to run k times faster than one: an assumption, multi-core scaling
is sub-linear in practice), the FL server an i9-10900F (10 cores), batch size 128, one local
epoch (~50 batches: 5 of the 10 classes of a 60k/50k-sample dataset per device), memory never
binding (12 GB containers), B = 30 Mbit/s. Models are ours (workloads/split_models.py: blocks
of LeNet-5, VGG-16 with the 32x32 classifier, ResNet-50/101 at 32x32), so cut indices count
our blocks, not the thesis's layers.

Usage: python bench/edgesplit.py [--batch 128] [--batches 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.kinds.training.decision import profile_here  # noqa: E402
from testbed.kinds.training.problem import build  # noqa: E402
from testbed.kinds.training.strategies import STRATEGIES  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
MODELS = ("lenet", "vgg16", "resnet50", "resnet101")
# table 4.4: vanilla, adaptive, fix, edgesplit (s per round) and EdgeSplit's partition points
THESIS_44 = {"lenet": (237.9, 234.2, 164.3, 134.8, "[1,1,1,1,2,2,4,4]"),
             "vgg16": (969.6, 953.2, 384.2, 243.4, "[1,1,3,3,13,13,13,13]"),
             "resnet50": (1806, 1800.4, 696.6, 330.2, "[1,1,1,1,2,2,49,49]"),
             "resnet101": (1355.7, 1352.3, 693.6, 308.1, "[1,1,1,1,1,1,8,8]")}
THESIS_410_VGG = {5: 1.3, 50: 3.1}  # EdgeSplit over vanilla FL, 20 devices (text of fig. 4.10)
SERVER_CORES = 10


def problem(model: str, cores: list[float], batch: int, batches: int, total: float):
    here = profile_here(model, batch)
    names = tuple(f"d{i}" for i in range(len(cores)))
    profiles = {n: here.scaled(1 / c) for n, c in zip(names, cores, strict=True)}
    profiles["server"] = here.scaled(1 / SERVER_CORES)
    memory = {n: 12 * 10**9 for n in names}
    return build(names, profiles, "server", memory, batches, total)


def table44(batch: int, batches: int) -> str:
    cores = [1, 1, 1, 1, 3, 3, 5, 5]
    rows = []
    for m in MODELS:
        p = problem(m, cores, batch, batches, 30.0)
        got = {s: STRATEGIES[s][0](p) for s in STRATEGIES}
        v, a, f, e = (got[s].makespan_s for s in ("vanilla-fl", "adaptive-fl",
                                                     "edgesplit-fix", "edgesplit"))
        tv, ta, tf, te, tcuts = THESIS_44[m]
        rows.append([m, f"{v:.1f} / {tv}", f"{a:.1f} / {ta}", f"{f:.1f} / {tf}",
                     f"{v / f:.2f}x / {tv / tf:.1f}x", f"{e:.1f} / {te}",
                     f"{v / e:.2f}x / {tv / te:.2f}x",
                     f"{got['edgesplit'].cuts.tolist()} of {p.blocks} / {tcuts}"])
    return table(["model", "vanilla FL s (ours / thesis)", "adaptive FL", "EdgeSplit-Fix",
                  "Fix ratio", "EdgeSplit", "EdgeSplit ratio", "EdgeSplit cuts (ours / "
                  "thesis layers)"], rows)


def fig410(batch: int, batches: int) -> str:
    cores = [[1, 3, 5][i % 3] for i in range(20)]
    rows = []
    for bw in (5, 10, 20, 30, 40, 50):
        row = [str(bw)]
        for m in ("vgg16", "resnet50", "resnet101"):
            p = problem(m, cores, batch, batches, float(bw))
            v = STRATEGIES["vanilla-fl"][0](p).makespan_s
            a = STRATEGIES["adaptive-fl"][0](p).makespan_s
            e = STRATEGIES["edgesplit"][0](p)
            local = int((e.cuts == p.blocks).sum())
            row.append(f"{v / e.makespan_s:.2f}x (adaptive {v / a:.2f}x, {local}/20 local)")
        row.append(f"{THESIS_410_VGG[bw]}x" if bw in THESIS_410_VGG else "")
        rows.append(row)
    return table(["B Mbit/s", "VGG-16: EdgeSplit over vanilla", "ResNet-50", "ResNet-101",
                  "thesis VGG-16"], rows)


def speed(batch: int, batches: int) -> str:
    rows = []
    rng = np.random.default_rng(0)
    for m_devices in (10, 20, 30, 50, 100):
        cores = list(rng.choice([1, 3, 5], size=m_devices))
        p = problem("resnet101", cores, batch, batches, 30.0)
        row = [str(m_devices), str(p.blocks)]
        for s in ("edgesplit", "adaptive-fl", "edgesplit-fix"):
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                STRATEGIES[s][0](p)
                times.append(time.perf_counter() - t0)
            row.append(f"{statistics.median(times) * 1000:.2f} / "
                       f"{sorted(times)[int(0.95 * len(times))] * 1000:.2f}")
        rows.append(row)
    return table(["devices", "cut points (ResNet-101 blocks)", "edgesplit ms (median / p95)",
                  "adaptive-fl ms", "edgesplit-fix ms"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=50)
    args = ap.parse_args()
    t44 = table44(args.batch, args.batches)
    f410 = fig410(args.batch, args.batches)
    write_section("edgesplit-analytic", "EdgeSplit at the thesis's sizes: table 4.4 and "
                  "figure 4.10 from measured per-block profiles",
                  "Round times from eq. 4.5 with per-block forward/backward seconds measured "
                  "here on one core (batch "
                  f"{args.batch}, {args.batches} batches per round), devices of 1/3/5 cores "
                  "and a 10-core server taken as k times one core, B = 30 Mbit/s, memory not "
                  "binding. Each cell: ours / the thesis.\n\n"
                  f"Table 4.4 (8 devices, cores 1,1,1,1,3,3,5,5):\n\n{t44}\n\n"
                  f"Figure 4.10 (20 devices, cores 1,3,5 in turn), speed-up over vanilla FL:"
                  f"\n\n{f410}\n", doc=RESULTS)
    write_section("edgesplit-speed", "EdgeSplit Algorithm 6: decision time",
                  "Algorithm 6 (and the baselines' P2) on ResNet-101's cut points, devices of "
                  "1/3/5 cores drawn with seed 0; 30 runs each. The thesis: ~1 s at 30 "
                  f"devices, < 3 s at 100 (figure 4.11).\n\n{speed(args.batch, args.batches)}\n")


if __name__ == "__main__":
    main()
