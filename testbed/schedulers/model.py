"""The analytic model of a Plan (thesis eqs. 3.1-3.4): per job, throughput = 1 / t_p where t_p
is the slowest stage, a node's compute time per item or a flow's transfer time per item.

Choice (the thesis leaves it open): tasks of one job on the same node run one after another
per item, so their work adds up on that node; a node's speed is shared equally among the jobs
that use it. The same model is the schedulers' prediction and, later, what measurements are
compared with.
"""

from __future__ import annotations

from collections import defaultdict

from testbed.schedulers.network import NetworkView, path_links
from testbed.schedulers.plan import JobPrediction, Plan

EPS = 1e-9


def jobs_per_node(plan: Plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for p in plan.placements:
        out[p.node].add(p.job)
    return out


def compute_times(view: NetworkView, plan: Plan) -> dict[str, tuple[float, str]]:
    """Per job: (slowest node's compute seconds per item, that node)."""
    sharing = jobs_per_node(plan)
    work: dict[tuple[str, str], float] = defaultdict(float)
    for p in plan.placements:
        work[(p.job, p.node)] += p.work
    out: dict[str, tuple[float, str]] = {}
    for (job, node), w in work.items():
        t = w / (view.nodes[node].speed_gops / len(sharing[node]))
        if t > out.get(job, (-1.0, ""))[0]:
            out[job] = (t, node)
    return out


def transfer_time(volume_bytes: int, rate_mbit: float) -> float:
    return float("inf") if rate_mbit <= EPS else volume_bytes * 8 / (rate_mbit * 1e6)


def predict(view: NetworkView, plan: Plan) -> dict[str, JobPrediction]:
    """Throughput (items/s) and bottleneck of every job in the plan."""
    comp = compute_times(view, plan)
    out = {}
    for job in plan.jobs:
        t, what = comp.get(job, (0.0, ""))
        what = f"compute {what}"
        for f in plan.flows_of(job):
            tf = transfer_time(f.volume_bytes, f.rate_mbit)
            if tf > t:
                t, what = tf, f"flow {f.src}->{f.dst}"
        prev = plan.predicted.get(job)
        out[job] = JobPrediction(throughput=0.0 if t == float("inf") else 1 / max(t, EPS),
                                 bottleneck=what,
                                 waiting_s=prev.waiting_s if prev else 0.0,
                                 scheduled_at_s=prev.scheduled_at_s if prev else 0.0,
                                 latency_s=critical_path_s(view, plan, job))
    return out


def critical_path_s(view: NetworkView, plan: Plan, job: str) -> float:
    """Latency of one item with no queueing: tasks in plan order (topological), each ready when
    its slowest input arrived, computing at its node's share; the latest finish wins."""
    sharing = jobs_per_node(plan)
    flows = {(f.src_task, f.dst_task): f for f in plan.flows_of(job)}
    finish: dict[str, float] = {}
    for p in plan.placements_of(job):  # stored in the job's topological order
        arrivals = [finish[pred] + (transfer_time(flows[(pred, p.task)].volume_bytes,
                                                  flows[(pred, p.task)].rate_mbit)
                                    if (pred, p.task) in flows else 0.0) for pred in p.after]
        if ("", p.task) in flows:  # the job's input from its source node
            f = flows[("", p.task)]
            arrivals.append(transfer_time(f.volume_bytes, f.rate_mbit))
        ready = max(arrivals, default=0.0)
        finish[p.task] = ready + p.work / (view.nodes[p.node].speed_gops / len(sharing[p.node]))
    return max(finish.values(), default=0.0)


def link_load(plan: Plan) -> dict[tuple[str, str], float]:
    """Sum of planned rates (Mbit/s) on every link."""
    load: dict[tuple[str, str], float] = defaultdict(float)
    for f in plan.flows:
        for lk in path_links(f.path):
            load[lk] += f.rate_mbit
    return load


def violations(view: NetworkView, plan: Plan, jobs) -> list[str]:
    """Everything that makes a plan infeasible (empty list: feasible)."""
    out = []
    mem: dict[str, int] = defaultdict(int)
    for p in plan.placements:
        mem[p.node] += p.memory_bytes
    out += [f"node {n}: {m} bytes placed, {view.nodes[n].memory_bytes} available"
            for n, m in mem.items() if m > view.nodes[n].memory_bytes]
    out += [f"link {a}-{b}: {load:.4f} Mbit/s planned, {view.links[(a, b)]} available"
            for (a, b), load in link_load(plan).items()
            if load > view.links[(a, b)] * (1 + 1e-6) + 1e-9]
    for f in plan.flows:
        if f.path[0] != f.src or f.path[-1] != f.dst:
            out.append(f"flow {f.key}: path {f.path} does not join {f.src} to {f.dst}")
        for a, b in zip(f.path, f.path[1:], strict=False):
            if not view.graph.has_edge(a, b):
                out.append(f"flow {f.key}: {a}-{b} is not a link")
    by_job = {j.name: j for j in jobs}
    for name in plan.jobs:
        job = by_job[name]
        where = {p.task: p.node for p in plan.placements_of(name)}
        if sorted(where) != sorted(t.name for t in job.tasks):
            out.append(f"job {name}: tasks placed {sorted(where)}")
            continue
        flows = {(f.src_task, f.dst_task) for f in plan.flows_of(name)}
        for t in job.tasks:
            for pred, _ in t.inputs:
                if where[pred] != where[t.name] and (pred, t.name) not in flows:
                    out.append(f"job {name}: no flow for {pred}->{t.name}")
            if not t.inputs and job.input_bytes and where[t.name] != job.source and (
                    "", t.name) not in flows:
                out.append(f"job {name}: no flow for the input to {t.name}")
    return out
