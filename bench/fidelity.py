"""Fidelity: measured / predicted throughput per scheduler on a fixed small setup.

Setup: 6 nodes of 0.3 cores in a ring with two chords (links 2-8 Mbit/s), two copies of the
attribute-recognition job at laptop scale (data x0.01, work x0.01, synthetic compute),
Poisson arrivals (1/s, seed 3), 10 s each. Every scheduler runs on the same testbed, one after
the other.

Usage: python bench/fidelity.py [--schedulers otfa,otfs,tp,lr,br]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from testbed import api  # noqa: E402
from testbed.experiment.options import RunOptions  # noqa: E402
from testbed.kinds import run  # noqa: E402
from tests.test_runner import MESH6, reduced_attr_jobs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schedulers", default="otfa,otfs,tp,lr,br")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fidelity-"))
    (tmp / "topo.yaml").write_text("name: bench-fidelity\n" + MESH6)
    jobs_file = reduced_attr_jobs(tmp / "jobs.yaml")
    api.up(tmp / "topo.yaml")
    rows = []
    try:
        for sched in args.schedulers.split(","):
            jobs = run("bench-fidelity", jobs_file, RunOptions(
                scheduler=sched, out_dir=tmp / sched, seed=3, duration_s=10))
            for r in jobs.itertuples():
                rows.append([sched, r.job, r.status, f"{r.throughput_predicted_items_s:.2f}",
                             f"{r.throughput_measured_items_s:.2f}", f"{r.fidelity:.2f}",
                             f"{r.latency_ms_unloaded_predicted:.0f}", f"{r.latency_ms_p50:.0f}"])
                print(rows[-1], flush=True)
    finally:
        api.down("bench-fidelity")
    body = table(["scheduler", "job", "status", "predicted items/s", "measured items/s",
                  "measured / predicted", "unloaded latency predicted ms", "measured p50 ms"], rows)
    body += ("\n\nPredicted: the scheduler's model (thesis eqs. 3.1-3.4) with node speeds "
             "measured by a calibration run inside each node's cgroup. Measured: completions "
             "at the job's source after the first item. Unloaded latency predicted is one "
             "item with no queueing (jobs.csv: latency_ms_unloaded_predicted, measured beside "
             "it as latency_ms_min); measured p50 includes queueing behind the other items in "
             "flight (the source keeps tasks + 1 items in flight). Goal: ratio >= 0.9.")
    write_section("fidelity", "Fidelity: measured vs predicted throughput", body)


if __name__ == "__main__":
    main()
