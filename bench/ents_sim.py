"""The ENTS experiment in simulation (thesis fig. 3.11a/b at its smallest size): mean job
throughput and waiting time of every scheduler over 10 random meshes, written to
docs/results.md.

Usage: python bench/ents_sim.py [--nodes 10] [--bw 1,10] [--seeds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed.schedulers import REGISTRY  # noqa: E402
from testbed.schedulers.jobs import load_jobs  # noqa: E402
from testbed.schedulers.network import NetworkView  # noqa: E402
from testbed.schedulers.simulate import simulate  # noqa: E402
from testbed.topology import loads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILES = "[raspberry-pi, jetson-nano, jetson-xavier-nx, jetson-agx, edge-server]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--bw", default="1,10")
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    rows = []
    for bw in [float(x) for x in args.bw.split(",")]:
        thr = {n: [] for n in REGISTRY}
        wait = {n: [] for n in REGISTRY}
        for seed in range(args.seeds):
            topo = loads(f"generate: {{random_mesh: {{nodes: {args.nodes}, degree: 3, "
                         f"bw_mean: {bw}, bw_var: 0.3, seed: {seed}, profiles: {PROFILES}}}}}",
                         "sim.yaml")
            view = NetworkView.from_topology(topo)
            jobs = load_jobs(ROOT / "workloads" / "attr-recognition.yaml", topo).jobs
            for name, entry in REGISTRY.items():
                res = simulate(view, jobs, entry.fn, name)
                thr[name].append(res.mean_throughput)
                wait[name].append(res.mean_waiting_s)
        for name in REGISTRY:
            rows.append([f"{bw:g}", name, f"{statistics.mean(thr[name]):.4f}",
                         f"{statistics.stdev(thr[name]):.4f}",
                         f"{statistics.mean(wait[name]):.2f}"])
            print(rows[-1], flush=True)
    body = table(["mean link Mbit/s", "scheduler", "mean job throughput items/s",
                  "std over seeds", "mean waiting s"], rows)
    body += (f"\n\n{args.nodes} nodes, random meshes of degree 3 (bandwidth variance 0.3), "
             f"boards drawn from {PROFILES}, 50 attribute-recognition jobs (Poisson 0.5/s, "
             f"60 s each), {args.seeds} seeds; event-driven simulation, decision time "
             "counted in the waiting time.")
    write_section(f"ents-sim-{args.nodes}", f"ENTS in simulation, {args.nodes} nodes", body,
                  ROOT / "docs" / "results.md")


if __name__ == "__main__":
    main()
