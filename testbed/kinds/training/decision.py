"""A training decision as a Plan: each device's blocks placed on it, the server's on the
server, one flow per device to the server at its planned bandwidth (both directions: the
activations and weights go up, the gradients and averaged weights come down), and the
Plan's extension with the cuts, bandwidths and predicted round times (eq. 4.5).

Profiles come from the nodes in a run; offline (`testbed schedule`) the model is profiled
once here on one core and scaled to each node's speed (its GOPS over one core's).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from testbed.kinds.training.problem import BlockProfile, Problem, build
from testbed.kinds.training.spec import Workload
from testbed.kinds.training.strategies import STRATEGIES, Split, decide
from testbed.schedulers import register
from testbed.schedulers.network import NetworkView
from testbed.schedulers.plan import Flow, JobPrediction, Placement, Plan, register_extension
from testbed.topology.model import Topology

PORT_BASE = 7400  # device i talks to the server on PORT_BASE + i


@dataclass(frozen=True)
class TrainingDecision:
    strategy: str
    server: str
    cuts: dict[str, int]
    blocks: int
    bandwidth_mbit: dict[str, float]
    round_predicted_s: dict[str, float]  # per device, eq. 4.5
    makespan_predicted_s: float  # the round: the slowest device
    compute_predicted_s: dict[str, float] = field(default_factory=dict)  # on the device
    server_compute_predicted_s: dict[str, float] = field(default_factory=dict)
    comm_predicted_s: dict[str, float] = field(default_factory=dict)
    iterations: int = 1
    # eq. 4.5's terms played out in time with one server shared by the devices
    # (Problem.shared_server_round_times): not what the strategies optimise, but what the
    # testbed's server can do; beside eq. 4.5 it tells the scheduler's model error from the
    # emulation's
    round_shared_predicted_s: dict[str, float] = field(default_factory=dict)
    makespan_shared_predicted_s: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> TrainingDecision:
        return cls(**d)


register_extension("training", TrainingDecision)


@dataclass(frozen=True)
class Decidable:
    """What a training strategy decides on: the workload and its profiled problem."""

    workload: Workload
    problem: Problem
    name: str = "training"
    arrival_s: float = 0.0


def to_plan(strategy: str, unit: Decidable, view: NetworkView, split: Split,
            decision_s: float) -> Plan:
    w, p = unit.workload, unit.problem
    server = w.spec.server
    placements = [Placement(w.name, f"server ({server})", server, 0.0, 0)]
    flows, predicted = [], {}
    for i, d in enumerate(p.devices):
        cut = int(split.cuts[i])
        placements.append(Placement(w.name, f"blocks 1-{cut} ({d})", d, 0.0, 0))
        volume = int(p.C[cut - 1] * 1e6 / 8)  # bytes per round, both directions
        flows.append(Flow(w.name, d, "server", d, server, volume, view.paths(d, server)[0],
                          float(split.bandwidth_mbit[i]), PORT_BASE + i))
    ext = priced(strategy, server, p, split)
    slowest = p.devices[int(split.round_s.argmax())]
    predicted[w.name] = JobPrediction(1.0 / split.makespan_s, f"device {slowest}",
                                      latency_s=split.makespan_s)
    return Plan(strategy, tuple(placements), tuple(flows), predicted, (), decision_s,
                kind="training", extension=ext)


def priced(strategy: str, server: str, p: Problem, split: Split) -> TrainingDecision:
    """The split's cuts and bandwidths with their predicted times on the problem's profiles."""
    shared = p.shared_server_round_times(split.cuts, split.bandwidth_mbit)
    comm = {d: float(p.C[int(split.cuts[i]) - 1] / max(split.bandwidth_mbit[i], 1e-12))
            for i, d in enumerate(p.devices)}
    return TrainingDecision(
        strategy, server, {d: int(split.cuts[i]) for i, d in enumerate(p.devices)}, p.blocks,
        {d: float(split.bandwidth_mbit[i]) for i, d in enumerate(p.devices)},
        {d: float(split.round_s[i]) for i, d in enumerate(p.devices)}, split.makespan_s,
        {d: float(_device_s(p, i, int(split.cuts[i]))) for i, d in enumerate(p.devices)},
        {d: float(p.A[i, int(split.cuts[i]) - 1] - _device_s(p, i, int(split.cuts[i])))
         for i, d in enumerate(p.devices)}, comm, split.iterations,
        {d: float(shared[i]) for i, d in enumerate(p.devices)}, float(shared.max()))


def repriced(ext: TrainingDecision, p: Problem) -> TrainingDecision:
    """The same decision (cuts, bandwidths) predicted again on other profiles of its nodes,
    e.g. taken under the load the decision itself puts on the machine."""
    cuts = np.array([ext.cuts[d] for d in p.devices])
    bw = np.array([ext.bandwidth_mbit[d] for d in p.devices])
    split = Split(cuts, bw, p.round_times(cuts, bw), ext.iterations)
    return priced(ext.strategy, ext.server, p, split)


def _device_s(p: Problem, i: int, cut: int) -> float:
    return float(p.device_s[i, cut - 1]) if p.device_s is not None else float(p.A[i, cut - 1])


def _strategy(name: str):
    """The registered scheduler: a pure function of the view and the profiled problem."""
    def scheduler(view: NetworkView, plan: Plan, waiting: list, now: float) -> Plan:
        unit = waiting[0]
        t0 = time.perf_counter()
        split = decide(name, unit.problem)
        return to_plan(name, unit, view, split, time.perf_counter() - t0)
    scheduler.__doc__ = STRATEGIES[name][1]
    return scheduler


for _name, (_fn, _summary) in STRATEGIES.items():
    register(_name, _strategy(_name), _summary, kind="training")


@functools.lru_cache(maxsize=8)
def profile_here(model: str, batch_size: int, width: float = 1.0) -> BlockProfile:
    """The model's per-block times on one core of this machine (offline planning)."""
    import torch

    from testbed.experiment.profile import ROOT

    sys.path.insert(0, str(ROOT / "workloads"))
    import split_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            got, _ = split_train.profile({"model": model, "batch_size": batch_size,
                                       "width": width})
    finally:
        torch.set_num_threads(threads)
    return BlockProfile.from_dict(json.loads(json.dumps(got)))


def offline_problem(topo: Topology, w: Workload, view: NetworkView,
                    gops_per_core: float) -> Problem:
    here = profile_here(w.spec.model, w.spec.batch_size, w.width)
    nodes = (w.spec.server, *w.devices)
    per_device = w.spec.server_share == "per-device"
    share = {n: len(w.devices) if per_device and n == w.spec.server else 1 for n in nodes}
    profiles = {n: here.scaled(gops_per_core * share[n] / view.nodes[n].speed_gops)
                for n in nodes}
    memory = {n: view.nodes[n].memory_bytes for n in nodes}
    return build(w.devices, profiles, w.spec.server, memory, w.spec.batches_per_round,
                 w.total_mbit, one_batch_at_a_time=w.spec.server_mode != "split-nonpipe",
                 server_per_device=per_device)


def schedule_offline(topo: Topology, w: Workload, strategy: str,
                     gops_per_core: float | None = None) -> Plan:
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE

    gops = gops_per_core or DEFAULT_GOPS_PER_CORE
    view = NetworkView.from_topology(topo, gops_per_core=gops)
    unit = Decidable(w, offline_problem(topo, w, view, gops))
    t0 = time.perf_counter()
    split = decide(strategy, unit.problem)
    return to_plan(strategy, unit, view, split, time.perf_counter() - t0)
