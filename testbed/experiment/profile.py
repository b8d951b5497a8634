"""Node profiling: how fast each node computes, measured inside it (its cgroup quota, its
container, its board), so the schedulers plan with the speeds the run will meet."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
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
    speeds = {}
    for node, info in ledger.topology["nodes"].items():
        argv, env = lifecycle.workload_command(ledger, node, PROBE_PROGRAM.name)
        res = lifecycle.run_in_node(ledger.name, node, [*argv, "--calibrate"], timeout=60,
                            env={**os.environ, **env})
        if res.returncode != 0:  # e.g. a device that does not answer: fail, do not hang
            raise NetworkError(f"cannot measure node {node}'s speed: "
                               f"{(res.stderr or res.stdout).strip()[-300:]}")
        single = float(res.stdout) / spin_per_s * gops_per_core
        speeds[node] = single * max(1.0, info.get("cpu") or 1.0)  # tasks use several cores
    view = NetworkView.from_topology(topology, speeds=speeds, gops_per_core=gops_per_core,
                                     k_paths=k_paths)
    return Profile(spin_per_s, gops_per_core, speeds, view)
