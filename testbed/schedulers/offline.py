"""Schedulers without a network: one decision over a job file (`testbed schedule`) and the
event-driven simulation of an online scheduler (`testbed simulate`, simulated campaigns)."""

from __future__ import annotations

from pathlib import Path

from testbed.topology import load
from testbed.topology.model import Topology


def schedule(topology: str | Path | Topology, jobs: str | Path, scheduler: str, k_paths: int = 3,
             gops_per_core: float | None = None):
    """Run a scheduler offline (no network): every job of the file waiting at time 0."""
    import time

    from testbed.schedulers import get
    from testbed.schedulers.jobs import load_jobs
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE, NetworkView
    from testbed.schedulers.plan import Plan

    fn = get(scheduler, "streams")
    topo = topology if isinstance(topology, Topology) else load(topology)
    jobset = load_jobs(jobs, topo)
    view = NetworkView.from_topology(topo, gops_per_core=gops_per_core or DEFAULT_GOPS_PER_CORE,
                                     k_paths=k_paths)
    t0 = time.perf_counter()
    plan = fn(view, Plan(scheduler), jobset.jobs, 0.0)
    from dataclasses import replace

    return replace(plan, decision_s=time.perf_counter() - t0)


def simulate(topology: str | Path, jobs: str | Path, scheduler: str, k_paths: int = 3,
             gops_per_core: float | None = None):
    """Event-driven simulation of an online scheduler on a topology (no network)."""
    from testbed.schedulers import get
    from testbed.schedulers.jobs import load_jobs
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE, NetworkView
    from testbed.schedulers.simulate import simulate as run_sim

    fn = get(scheduler, "streams")
    topo = load(topology)
    view = NetworkView.from_topology(topo, gops_per_core=gops_per_core or DEFAULT_GOPS_PER_CORE,
                                     k_paths=k_paths)
    return run_sim(view, load_jobs(jobs, topo).jobs, fn, scheduler)
