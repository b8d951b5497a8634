"""Node profiling: how fast each node computes, measured inside it (its cgroup quota, its
container, its board), so the schedulers plan with the speeds the run will meet."""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from testbed import lifecycle
from testbed.errors import NetworkError
from testbed.net.ledger import Ledger
from testbed.schedulers.network import NetworkView
from testbed.topology.model import Topology

ROOT = Path(__file__).resolve().parent.parent.parent
PROBE_PROGRAM = ROOT / "workloads" / "dag_task.py"  # its --calibrate modes are the probes


@dataclass(frozen=True)
class Profile:
    spin_per_s: float  # synthetic compute loop iterations per second on a whole core, here
    gops_per_core: float  # the unit of work of one core (measured on convolutions for torch)
    speeds: dict[str, float]  # node -> giga-operations per second
    view: NetworkView  # what schedulers plan with: the topology and these speeds
    unable: dict[str, str]  # node -> why it cannot run tasks (it still forwards traffic)


# what a node without the workload's requirements answers: exec failed (126/127) or python3
# could not open the program (2, "can't open file")
CANNOT_RUN = ("failed to execute", "No such file or directory", "can't open file",
              "not found")


def cannot_run(returncode: int, output: str) -> bool:
    return returncode in (2, 126, 127) and any(s in output for s in CANNOT_RUN)


def profile(ledger: Ledger, topology: Topology, compute: str, gops_per_core: float,
            k_paths: int) -> Profile:
    if compute == "torch":  # one core's speed on real convolutions
        res = subprocess.run([sys.executable, str(PROBE_PROGRAM), "--calibrate-torch"],
                             capture_output=True, text=True, check=True,
                             cwd=PROBE_PROGRAM.parent)
        gops_per_core = float(res.stdout)
    probe = [sys.executable, str(PROBE_PROGRAM), "--calibrate"]
    spin_per_s = statistics.median(
        float(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
        for _ in range(3))
    speeds, unable = {}, {}
    measured = lifecycle.run_workload_each(ledger, list(ledger.topology["nodes"]),
                                           PROBE_PROGRAM.name, ["--calibrate"], timeout=60)
    for node, info in ledger.topology["nodes"].items():
        res = measured[node]
        said = (res.stderr or res.stdout).strip()
        if cannot_run(res.returncode, said):  # a stock image without python3/setpriv
            unable[node] = (f"cannot run tasks ({said.splitlines()[-1][:160]}); a node that "
                            "runs tasks needs python3, setpriv and the workloads (the "
                            "edge-node image has them)")
            continue
        if res.returncode != 0:  # e.g. a device that does not answer: fail, do not hang
            raise NetworkError(f"cannot measure node {node}'s speed: "
                               f"{(res.stderr or res.stdout).strip()[-300:]}")
        single = float(res.stdout) / spin_per_s * gops_per_core
        speeds[node] = single * max(1.0, info.get("cpu") or 1.0)  # tasks use several cores
    if not speeds:
        raise NetworkError("no node can run tasks: " + "; ".join(
            f"{n}: {why}" for n, why in unable.items()))
    full = NetworkView.from_topology(topology, speeds=speeds, gops_per_core=gops_per_core,
                                     k_paths=k_paths)
    # nodes that cannot run tasks are left out of placement but still forward traffic
    view = replace(full, nodes={n: v for n, v in full.nodes.items() if n not in unable})
    return Profile(spin_per_s, gops_per_core, speeds, view, unable)
