"""Decision time of the schedulers for 50 queued jobs (the attribute-recognition job) on random
meshes of 10, 30, 50 and 70 nodes (degree 3, 1 Mbit/s mean), and the simulated averages.

Usage: python bench/schedulers.py [--sizes 10,30,50,70] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.schedulers import REGISTRY  # noqa: E402
from testbed.schedulers.jobs import load_jobs  # noqa: E402
from testbed.schedulers.network import NetworkView  # noqa: E402
from testbed.schedulers.plan import Plan  # noqa: E402
from testbed.topology import loads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILES = "[raspberry-pi, jetson-nano, jetson-xavier-nx, jetson-agx, edge-server]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,30,50,70")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        topo = loads(f"generate: {{random_mesh: {{nodes: {n}, degree: 3, bw_mean: 1, "
                     f"bw_var: 0.3, seed: 1, profiles: {PROFILES}}}}}", "bench.yaml")
        jobs = load_jobs(ROOT / "workloads" / "attr-recognition.yaml", topo).jobs
        row = [n]
        for name in ("otfa", "otfs", "tp", "lr", "br"):
            cold, warm, placed = [], [], 0
            for _ in range(args.repeat):
                view = NetworkView.from_topology(topo)  # fresh: no cached paths
                for times in (cold, warm):  # warm: the same view again, paths cached
                    t0 = time.perf_counter()
                    plan = REGISTRY[name].fn(view, Plan(name), jobs, 0.0)
                    times.append(time.perf_counter() - t0)
                placed = len(plan.jobs)
            row.append(f"{statistics.median(cold) * 1000:.0f} / "
                       f"{statistics.median(warm) * 1000:.0f} ({placed})")
        rows.append(row)
        print(row, flush=True)
    body = table(["nodes", "OTFA ms cold / warm (jobs placed)", "OTFS", "TP", "LR", "BR"],
                 rows)
    body += ("\n\nOne decision with all 50 jobs queued at once, median of "
             f"{args.repeat}. Cold: a fresh network view, the k=3 candidate paths of every flow "
             "computed inside the timing; warm: the same view again (paths cached), as in a "
             "running online scheduler. The thesis reports "
             "about 1 s of waiting at 50 nodes and 2.5 s at 70; the target here is 0.1 s for "
             "OTFA at 50 nodes. Jobs not placed did not fit in memory and wait.")
    write_section("schedulers", "Scheduler decision time (50 queued jobs)", body)


if __name__ == "__main__":
    main()
