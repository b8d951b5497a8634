"""Schedulers as pure functions: feasibility of every Plan, Algorithm 1 + JRBA against brute
force on small instances, the LP bound, and the thesis's low-bandwidth ordering."""

import itertools
import statistics
from dataclasses import replace

import pytest

from testbed.errors import TopologyError
from testbed.schedulers import REGISTRY, ents, model
from testbed.schedulers.jobs import load_jobs, loads_jobs
from testbed.schedulers.network import NetworkView, path_links
from testbed.schedulers.plan import Flow, Plan
from testbed.schedulers.simulate import simulate
from testbed.topology import loads
from tests.conftest import ROOT

PROFILES = "[raspberry-pi, jetson-nano, jetson-xavier-nx, jetson-agx, edge-server]"
ATTR = ROOT / "workloads" / "attr-recognition.yaml"


def mesh(nodes: int, bw: float, seed: int, profiles: bool = True):
    extra = f", profiles: {PROFILES}" if profiles else ""
    return loads(f"generate: {{random_mesh: {{nodes: {nodes}, degree: 3, bw_mean: {bw}, "
                 f"bw_var: 0.3, seed: {seed}{extra}}}}}", "mesh.yaml")


# ---- job files ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ("jobs: [{name: a, source: e1, tasks: {x: {work: 1, after: {y: 1kB}}}}]",
     "jobs[0].tasks.x.after: unknown task 'y'"),
    ("jobs: [{name: a, source: e1, tasks: {x: {work: 1, after: {y: 1}}, "
     "y: {work: 1, after: {x: 1}}}}]", "the tasks form a cycle"),
    ("jobs: [{name: a, source: e1, tasks: {x: {work: 1, memory: 5 GB}}}]", "is not a size"),
    ("jobs: [{name: a, source: e1, tasks: {x: {wrok: 1}}}]", "did you mean 'work'"),
    ("jobs: [{name: a, source: e9, tasks: {x: {work: 1}}}]", "jobs[0].source: unknown node 'e9'"),
    ("jobs: [{name: a, source: e1, tasks: {}}]", "needs at least one task"),
    ("jobs: [{name: a, source: e1, tasks: {x: {work: -1}}}]", "jobs[0].tasks.x.work"),
])
def test_bad_job_files_name_field_and_fix(text, message):
    topo = loads("nodes: {e1: {}, e2: {}}\nlinks: [{between: [e1, e2]}]", "t.yaml")
    with pytest.raises(TopologyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loads_jobs(text, "jobs.yaml", topo)


def test_issue_job_example_and_shipped_workload():
    js = loads_jobs("""
jobs:
  - name: cam1
    source: e4
    input: 6MB
    arrival: 0s
    tasks:
      detect: {work: 4.2, memory: 512MB, model: mobilenet_v2}
      attrs:  {work: 8.1, memory: 1GB, model: resnet50, after: {detect: 200kB}}
      track:  {work: 0.1, memory: 64MB, after: {attrs: 2kB, detect: 2kB}}
""")
    (job,) = js.jobs
    assert job.input_bytes == 6_000_000 and [t.name for t in job.tasks] == ["detect", "attrs",
                                                                             "track"]
    assert job.task("track").inputs == (("attrs", 2000), ("detect", 2000))
    attr = load_jobs(ATTR, mesh(10, 1, 0))
    assert len(attr.jobs) == 50 and len(attr.jobs[0].tasks) == 9  # + the source: 10 modules
    arrivals = [j.arrival_s for j in attr.jobs]
    assert arrivals == sorted(arrivals) and 60 < arrivals[-1] < 160  # Poisson, 0.5 jobs/s


def test_plan_round_trips_through_json():
    topo = mesh(8, 1, 3)
    view = NetworkView.from_topology(topo)
    plan = REGISTRY["otfa"].fn(view, Plan("otfa"), load_jobs(ATTR, topo).jobs[:4], 0.0)
    assert plan.flows and Plan.from_json(plan.to_json()) == plan


# ---- feasibility -------------------------------------------------------------------------
STREAMS = sorted(n for n, e in REGISTRY.items() if e.kind == "streams")


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_plan_is_feasible(name, seed):
    """Memory per node, rates per link, paths are walks, every crossing DAG edge has a flow;
    checked at every decision of an online run, not only the first."""
    topo = mesh(12, 1 if seed % 2 else 10, seed, profiles=seed != 2)
    view = NetworkView.from_topology(topo)
    jobs = load_jobs(ATTR, topo).jobs[:30]
    fn = REGISTRY[name].fn
    checked = []

    def checking(v, running, waiting, now):
        plan = fn(v, running, waiting, now)
        assert model.violations(v, plan, jobs) == [], (name, now)
        checked.append(now)
        return plan

    res = simulate(view, jobs, checking, name)
    assert len(checked) >= 30 and res.unplaced == 0


# ---- brute force on small instances ------------------------------------------------------
SMALL = [
    ("nodes: {a: {cpu: 1}, b: {cpu: 2}, c: {cpu: 0.5}}\nlinks: [{between: [a, b], bw: 2}, "
     "{between: [b, c], bw: 5}, {between: [a, c], bw: 1}]",
     "jobs: [{name: j, source: a, input: 200kB, tasks: {t1: {work: 20, memory: 1GB}, "
     "t2: {work: 40, memory: 1GB, after: {t1: 300kB}}, t3: {work: 10, memory: 1GB, "
     "after: {t1: 100kB, t2: 50kB}}}}]"),
    ("nodes: {a: {cpu: 1}, b: {cpu: 1}, c: {cpu: 1}, d: {cpu: 2}}\nlinks: [{between: [a, b], "
     "bw: 1}, {between: [b, c], bw: 3}, {between: [c, d], bw: 1}, {between: [d, a], bw: 2}]",
     "jobs: [{name: j, source: b, input: 1MB, tasks: {t1: {work: 10, memory: 1GB}, "
     "t2: {work: 30, memory: 1GB, after: {t1: 400kB}}, t3: {work: 30, memory: 1GB, "
     "after: {t1: 400kB}}, t4: {work: 5, memory: 1GB, after: {t2: 20kB, t3: 20kB}}}}]"),
    ("nodes: {a: {cpu: 2}, b: {cpu: 0.5}, c: {cpu: 1, memory: 1GB}}\nlinks: [{between: [a, b], "
     "bw: 4}, {between: [b, c], bw: 4}, {between: [a, c], bw: 4}]",
     "jobs: [{name: j, source: c, input: 2MB, tasks: {t1: {work: 5, memory: 600MB}, "
     "t2: {work: 50, memory: 600MB, after: {t1: 1MB}}, t3: {work: 50, memory: 600MB, "
     "after: {t1: 1MB}}}}]"),
]


def best_time_for_routing(view, dems, paths) -> float:
    """With fixed paths, the least max V_i/b_i is max over links of (sum of V)/B (b_i ∝ V_i)."""
    volume = {}
    for d, p in zip(dems, paths, strict=True):
        for lk in path_links(p):
            volume[lk] = volume.get(lk, 0) + d.volume_bytes * 8 / 1e6
    return max((v / view.links[lk] for lk, v in volume.items()), default=0.0)


@pytest.mark.parametrize("case", range(len(SMALL)))
def test_algorithm1_and_jrba_against_brute_force(case, record_property):
    topo = loads(SMALL[case][0], "small.yaml")
    (job,) = loads_jobs(SMALL[case][1], "small-jobs.yaml", topo).jobs
    view = NetworkView.from_topology(topo)
    nodes = list(view.nodes)

    def job_time(where, t_net) -> float:
        """Seconds per item: the slowest node (its tasks' work adds up) or the network."""
        work = {}
        for t in job.tasks:
            work[where[t.name]] = work.get(where[t.name], 0) + t.work
        return max(max(w / view.nodes[n].speed_gops for n, w in work.items()), t_net)

    best = float("inf")
    for combo in itertools.product(nodes, repeat=len(job.tasks)):
        where = dict(zip((t.name for t in job.tasks), combo, strict=True))
        used = {}
        for t in job.tasks:
            used[where[t.name]] = used.get(where[t.name], 0) + t.memory_bytes
        if any(m > view.nodes[n].memory_bytes for n, m in used.items()):
            continue
        dems = ents.demands(job, where)
        for paths in itertools.product(*(view.paths(d.src, d.dst) for d in dems)):
            best = min(best, job_time(where, best_time_for_routing(view, dems, paths)))

    where = ents.allocate_tasks(view, job, {n: v.memory_bytes for n, v in view.nodes.items()},
                                {})
    dems = ents.demands(job, where)
    routing = ents.jrba(view, dems, dict(view.links))
    t_net = max((d.volume_bytes * 8 / 1e6 / routing.rates[d.key] for d in dems), default=0.0)
    ours = job_time(where, t_net)
    gap = ours / best - 1
    record_property("gap_vs_brute_force", round(gap, 4))
    print(f"case {case}: ours {1 / ours:.4f} items/s, optimum {1 / best:.4f}, gap {gap:.1%}")
    assert ours >= best - 1e-9  # nothing beats the exhaustive optimum
    assert gap < 1.0  # the greedy + LP heuristic stays within 2x here
    # the LP bound of P3-RELAX-CVX is never beaten by any feasible routing of these flows
    for paths in itertools.product(*(view.paths(d.src, d.dst) for d in dems)):
        assert best_time_for_routing(view, dems, paths) >= routing.lp_bound_s - 1e-9
    # and JRBA's own allocation is feasible and no better than its bound
    assert t_net >= routing.lp_bound_s - 1e-9
    plan = Plan("jrba", flows=tuple(
        Flow(d.job, d.src_task, d.dst_task, d.src, d.dst, d.volume_bytes,
                   routing.paths[d.key], routing.rates[d.key]) for d in dems))
    assert all(v <= view.links[lk] + 1e-9 for lk, v in model.link_load(plan).items())


def test_jrba_avoids_a_congested_path():
    """Two flows from a to c; the LP sends them on different paths when one is thin."""
    topo = loads("nodes: {a: {}, b: {}, c: {}}\nlinks: [{between: [a, c], bw: 10}, "
                 "{between: [a, b], bw: 10}, {between: [b, c], bw: 10}]", "tri.yaml")
    view = NetworkView.from_topology(topo)
    dems = [ents.Demand("j", "x", "y", "a", "c", 1_000_000),
            ents.Demand("j", "x", "z", "a", "c", 1_000_000)]
    routing = ents.jrba(view, dems, dict(view.links))
    assert {routing.paths[d.key] for d in dems} == {("a", "c"), ("a", "b", "c")}
    # 8 Mbit per item on each path; a 10 Mbit/s link carries 10 x 1448/1514 Mbit/s of TCP data
    assert routing.lp_bound_s == pytest.approx(8 / (10 * 1448 / 1514), rel=1e-6)


def test_otfs_uses_only_bandwidth_left_and_otfa_readjusts():
    topo = mesh(8, 1, 5)
    view = NetworkView.from_topology(topo)
    jobs = load_jobs(ATTR, topo).jobs[:6]
    first = REGISTRY["otfs"].fn(view, Plan("otfs"), jobs[:3], 0.0)
    later = REGISTRY["otfs"].fn(view, replace(first, waiting=()), jobs[3:], 10.0)
    kept = {f.key: f for f in first.flows}
    assert all(kept[f.key] == f for f in later.flows if f.key in kept)  # running untouched
    readjusted = REGISTRY["otfa"].fn(view, replace(first, waiting=()), jobs[3:], 10.0)
    assert model.violations(view, readjusted, jobs) == []
    assert {f.key for f in readjusted.flows} >= set(kept)


# ---- the thesis's ordering at low bandwidth ----------------------------------------------
# the schedulers the ordering below compares (OTFA and TP take 3 of every 8 s simulated and
# the thesis's order among them does not hold here: docs/results.md has all five)
COMPARED = ("otfs", "lr", "br")


def _throughputs(seed: int, nodes: int, bw: float) -> dict[str, float]:
    topo = mesh(nodes, bw, seed)
    view = NetworkView.from_topology(topo)
    jobs = load_jobs(ATTR, topo).jobs
    return {name: simulate(view, jobs, REGISTRY[name].fn, name,
                           count_decision_time=False).mean_throughput for name in COMPARED}


def ordering_over_seeds(seeds=range(10), nodes=10, bw=1.0) -> dict[str, float]:
    """Mean throughput per scheduler over the seeds (simulated; seeds in parallel: pure)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        runs = list(pool.map(_throughputs, seeds, [nodes] * len(seeds), [bw] * len(seeds)))
    return {n: statistics.mean(r[n] for r in runs) for n in COMPARED}


@pytest.fixture(scope="module")
def low_bandwidth_means():
    return ordering_over_seeds()


@pytest.mark.slow
def test_ents_schedulers_beat_whole_job_baselines_at_low_bandwidth(low_bandwidth_means):
    m = low_bandwidth_means
    print("mean throughput over 10 seeds, 10 nodes, 1 Mbit/s:", m)
    assert m["otfs"] > max(m["lr"], m["br"])
    # the thesis's full ordering (OTFA >= OTFS >= TP > LR, BR) does not hold with this
    # workload's derived data volumes; docs/results.md reports the numbers side by side
