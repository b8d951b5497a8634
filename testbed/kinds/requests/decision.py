"""A period's dispatch as a Plan: each request is a unit placed on its execution edge, each
request that moves is a flow from its source edge, and the Plan's extension holds what the
dispatch model predicts (per-edge completion times, the makespan, per-request times)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from testbed.kinds.requests.instance import Instance, edge_times, request_times
from testbed.kinds.requests.policies import Dispatch, decide
from testbed.kinds.requests.spec import (
    Request,
    Workload,
    arrivals,
    initial_backlog,
    instance,
    offline_model,
)
from testbed.schedulers.network import NetworkView
from testbed.schedulers.plan import Flow, JobPrediction, Placement, Plan, register_extension
from testbed.topology.model import Topology


@dataclass(frozen=True)
class PeriodDecision:
    period: int
    makespan_predicted_s: float
    edge_time_predicted_s: dict[str, float]
    request_time_predicted_s: dict[str, float]
    variant: dict[str, str] = field(default_factory=dict)  # request -> variant (if chosen)
    optimal: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> PeriodDecision:
        return cls(**d)


register_extension("requests", PeriodDecision)


def to_plan(policy: str, w: Workload, view: NetworkView, reqs: list[Request], inst: Instance,
            d: Dispatch, decision_s: float) -> Plan:
    edges = w.edges
    times = request_times(inst, d.edge, d.variant) if len(reqs) else np.zeros(0)
    t_edge = edge_times(inst, d.edge, d.variant) if len(reqs) else np.zeros(len(edges))
    variants = w.spec.service.variants
    placements, flows, predicted = [], [], {}
    for k, r in enumerate(reqs):
        dst, src = edges[int(d.edge[k])], edges[r.source]
        placements.append(Placement(r.name, "serve", dst, 0.0, 0))
        if dst != src:
            flows.append(Flow(r.name, "", "serve", src, dst, r.size_bytes,
                              view.paths(src, dst)[0], 0.0))
        predicted[r.name] = JobPrediction(throughput=0.0, bottleneck=f"edge {dst}",
                                          latency_s=float(times[k]))
    chosen = {} if d.variant is None or not variants else \
        {r.name: variants[int(d.variant[k])].name for k, r in enumerate(reqs)}
    ext = PeriodDecision(reqs[0].period if reqs else 0, float(t_edge.max()),
                         {e: float(t) for e, t in zip(edges, t_edge, strict=True)},
                         {r.name: float(times[k]) for k, r in enumerate(reqs)}, chosen,
                         d.optimal)
    return Plan(policy, tuple(placements), tuple(flows), predicted, (), decision_s,
                kind="requests", extension=ext)


def schedule_offline(topo: Topology, w: Workload, policy: str, seed: int = 0,
                     gops_per_core: float | None = None) -> Plan:
    """`testbed schedule` for a requests file: the first period's dispatch on the topology's
    offline model (configured speeds and link rates), with the file's initial backlog."""
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE

    view = NetworkView.from_topology(topo, gops_per_core=gops_per_core or DEFAULT_GOPS_PER_CORE)
    model = offline_model(w, view)
    reqs = arrivals(w)[0]
    inst = instance(w, model, reqs, *initial_backlog(w, model))
    d, took = decide(policy, inst, seed)
    return to_plan(policy, w, view, reqs, inst, d, took)
