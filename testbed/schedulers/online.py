"""The schedulers: pure functions (network view, running plan, waiting jobs, time) -> new plan.

Every scheduler has the same signature, so the simulator and the runner call any of them
(ENTS's OTFS and OTFA, the baselines TP, LR and BR, and users' own) the same way:

    decide(view, running, waiting, now) -> Plan

`running` holds the jobs already placed (their placements, flows and predictions); the result
holds them too (possibly with new paths or rates) plus the newly placed jobs; jobs that could
not be placed are listed in Plan.waiting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from testbed.schedulers import ents, model
from testbed.schedulers.jobs import Job
from testbed.schedulers.network import NetworkView
from testbed.schedulers.plan import Flow, Placement, Plan

Scheduler = Callable[[NetworkView, Plan, Sequence[Job], float], Plan]


# ---- shared steps ------------------------------------------------------------------------
def free_memory(view: NetworkView, plan: Plan) -> dict[str, int]:
    free = {n: v.memory_bytes for n, v in view.nodes.items()}
    for p in plan.placements:
        free[p.node] -= p.memory_bytes
    return free


def residual_capacity(view: NetworkView, plan: Plan) -> dict[tuple[str, str], float]:
    load = model.link_load(plan)
    return {lk: max(0.0, bw - load.get(lk, 0.0)) for lk, bw in view.links.items()}


def place(job: Job, where: dict[str, str]) -> list[Placement]:
    return [Placement(job.name, t.name, where[t.name], t.work, t.memory_bytes,
                      tuple(pred for pred, _ in t.inputs)) for t in job.tasks]


def compute_limited_need(view: NetworkView, plan: Plan, job: Job, where: dict[str, str],
                         dems: list[ents.Demand]) -> dict:
    """Mbit/s each flow needs so that it is not slower than the job's compute stages."""
    trial = replace(plan, placements=plan.placements + tuple(place(job, where)))
    t_comp = model.compute_times(view, trial)[job.name][0]
    rate = 1 / max(t_comp, 1e-9)
    return {d.key: d.volume_bytes * 8 * rate / 1e6 for d in dems}


def finish(view: NetworkView, plan: Plan, scheduler: str, new_jobs: dict[str, Job],
           waiting: list[str], now: float) -> Plan:
    """Attach predictions (throughput, waiting time) to a plan."""
    plan = replace(plan, scheduler=scheduler, waiting=tuple(waiting))
    preds = model.predict(view, plan)
    for name, p in preds.items():
        if name in new_jobs:
            preds[name] = replace(p, waiting_s=max(0.0, now - new_jobs[name].arrival_s),
                                  scheduled_at_s=now)
    return replace(plan, predicted=preds)


def as_flows(dems: list[ents.Demand], paths: dict, rates: dict) -> list[Flow]:
    return [Flow(d.job, d.src_task, d.dst_task, d.src, d.dst, d.volume_bytes,
                 tuple(paths[d.key]), rates[d.key]) for d in dems]


def by_waiting_time(waiting: Sequence[Job]) -> list[Job]:
    """Longest-waiting first (earliest arrival), ties by name."""
    return sorted(waiting, key=lambda j: (j.arrival_s, j.name))


def demands_of(plan: Plan) -> list[ents.Demand]:
    return [ents.Demand(f.job, f.src_task, f.dst_task, f.src, f.dst, f.volume_bytes)
            for f in plan.flows]


# ---- ENTS online schedulers --------------------------------------------------------------
def otfs(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float = 0.0) -> Plan:
    """Algorithm 3: jobs one by one, each with Algorithm 1 and JRBA on the capacity left
    (Algorithm 1 estimates transfers with the mean bandwidth left, as B_l is updated)."""
    plan, placed, left = running, {}, []
    for job in by_waiting_time(waiting):
        residual = residual_capacity(view, plan)
        where = ents.allocate_tasks(view, job, free_memory(view, plan),
                                    model.jobs_per_node(plan),
                                    sum(residual.values()) / max(len(residual), 1))
        if where is None:
            left.append(job.name)
            continue
        dems = ents.demands(job, where)
        need = compute_limited_need(view, plan, job, where, dems)
        routing = ents.jrba(view, dems, residual_capacity(view, plan), need)
        if routing is None:  # no bandwidth left on any candidate path
            left.append(job.name)
            continue
        plan = replace(plan, placements=plan.placements + tuple(place(job, where)),
                       flows=plan.flows + tuple(as_flows(dems, routing.paths, routing.rates)))
        placed[job.name] = job
    return finish(view, plan, "otfs", placed, left, now)


def allocate_all(view: NetworkView, running: Plan, waiting: Sequence[Job]) -> tuple:
    """Algorithm 1 for every waiting job in turn (each booking memory and node share for the
    next); returns (plan with the new placements, placed jobs, names left, their demands)."""
    free, sharing = free_memory(view, running), model.jobs_per_node(running)
    placed, left, dems, new_placements = {}, [], [], []
    for job in by_waiting_time(waiting):
        where = ents.allocate_tasks(view, job, free, sharing)
        if where is None:
            left.append(job.name)
            continue
        for p in place(job, where):
            free[p.node] -= p.memory_bytes
            sharing[p.node].add(job.name)
            new_placements.append(p)
        dems += ents.demands(job, where)
        placed[job.name] = job
    plan = replace(running, placements=running.placements + tuple(new_placements))
    return plan, placed, left, dems


def otfa(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float = 0.0) -> Plan:
    """Algorithm 4: Algorithm 1 for every waiting job, then JRBA over all flows, old and new."""
    plan, placed, left, new_dems = allocate_all(view, running, waiting)
    if not placed and not running.flows:
        return finish(view, plan, "otfa", placed, left, now)
    all_dems = demands_of(running) + new_dems
    need = {}
    comp = model.compute_times(view, plan)
    for d in all_dems:
        need[d.key] = d.volume_bytes * 8 / max(comp[d.job][0], 1e-9) / 1e6
    routing = ents.jrba(view, all_dems, dict(view.links), need)
    if routing is None:  # cannot happen with full capacities unless a link has none
        return otfs(view, running, waiting, now)
    plan = replace(plan, flows=tuple(as_flows(all_dems, routing.paths, routing.rates)))
    return finish(view, plan, "otfa", placed, left, now)


# ---- baselines ---------------------------------------------------------------------------
def _shortest_equal_share(view: NetworkView, plan: Plan, new: list[ents.Demand]) -> tuple:
    """Default routing (shortest path) and equal sharing of every link by all flows."""
    dems = demands_of(plan) + new
    paths = {d.key: view.shortest_path(d.src, d.dst) for d in dems}
    return dems, paths, ents.equal_rates(paths, view.links)


def tp(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float = 0.0) -> Plan:
    """Task Partition: Algorithm 1 placement, shortest paths, links shared equally."""
    plan, placed, left, new = allocate_all(view, running, waiting)
    dems, paths, rates = _shortest_equal_share(view, running, new)
    plan = replace(plan, flows=tuple(as_flows(dems, paths, rates)))
    return finish(view, plan, "tp", placed, left, now)


def whole_job(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float,
              name: str, score: Callable[[float, float], float]) -> Plan:
    """Kubernetes-style: the whole job on one node chosen by `score(cpu_frac, mem_frac)` of
    the node after placing it (higher is better); memory must fit. Public: a plug-in that
    only ranks nodes is one call to this (README, "Your own scheduler")."""
    plan, placed, left, new = running, {}, [], []
    for job in by_waiting_time(waiting):
        free = free_memory(view, plan)
        cpu_req = _cpu_requests(view, plan)
        best = None
        pinned = {t.node for t in job.tasks if t.node}
        for rank, (n, node) in enumerate(view.nodes.items()):
            if free[n] < job.memory_bytes or (pinned and pinned != {n}):
                continue
            cores = node.speed_gops / _gops_per_core(view)
            cpu_frac = (cpu_req[n] + job.work / _gops_per_core(view)) / max(node.cores, cores)
            mem_frac = 1 - (free[n] - job.memory_bytes) / node.memory_bytes
            cand = (score(cpu_frac, mem_frac), -rank, n)
            if best is None or cand > best:
                best = cand
        if best is None:
            left.append(job.name)
            continue
        where = {t.name: best[2] for t in job.tasks}
        plan = replace(plan, placements=plan.placements + tuple(place(job, where)))
        new += ents.demands(job, where)
        placed[job.name] = job
    dems, paths, rates = _shortest_equal_share(view, running, new)
    plan = replace(plan, flows=tuple(as_flows(dems, paths, rates)))
    return finish(view, plan, name, placed, left, now)


def _gops_per_core(view: NetworkView) -> float:
    node = next(iter(view.nodes.values()))
    return node.speed_gops / max(node.cores, 1e-9)


def _cpu_requests(view: NetworkView, plan: Plan) -> dict[str, float]:
    """CPU a node's jobs request, in cores: the cores needed for one item per second."""
    req: dict[str, float] = defaultdict(float)
    for p in plan.placements:
        req[p.node] += p.work / _gops_per_core(view)
    return req


def lr(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float = 0.0) -> Plan:
    """LeastRequestedPriority: the node with the most CPU and memory left after placing."""
    return whole_job(view, running, waiting, now, "lr",
                      lambda cpu, mem: ((1 - min(cpu, 1)) + (1 - mem)) / 2)


def br(view: NetworkView, running: Plan, waiting: Sequence[Job], now: float = 0.0) -> Plan:
    """BalancedResourceAllocation: the node whose CPU and memory use end up closest."""
    return whole_job(view, running, waiting, now, "br",
                      lambda cpu, mem: 1 - abs(min(cpu, 1) - mem))


__all__ = ["Scheduler", "br", "lr", "otfa", "otfs", "tp", "whole_job"]
