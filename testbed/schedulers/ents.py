"""ENTS building blocks (thesis ch. 3.5): task allocation (Algorithm 1) and joint routing and
bandwidth allocation, JRBA (Algorithm 2), plus equal link sharing for the baselines.

Choices where the thesis is open:
- Algorithm 1 estimates a transfer with the mean link bandwidth (as the thesis says), and a
  node's compute time with the work this job already has there plus the task's, on the node's
  speed shared with the other jobs already using it (the model in model.py).
- JRBA solves P3-RELAX-CVX (eqs. 3.10-3.14) as an LP with HiGHS over K candidate paths per flow
  (k shortest simple paths), routes each flow on its largest m_i^k, then gives bandwidth by
  eq. 3.15 (each link split in proportion to volume), capped at what the job can use: its
  compute rate and its slowest flow (so unused bandwidth stays for other jobs). Every
  allocation is feasible on every link. A flow none of whose candidate paths has capacity
  left makes JRBA fail: the job waits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from testbed.schedulers.jobs import Job
from testbed.schedulers.network import NetworkView, path_links

EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """A flow to route: per item `volume_bytes` from node src to node dst."""

    job: str
    src_task: str
    dst_task: str
    src: str
    dst: str
    volume_bytes: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.job, self.src_task, self.dst_task)


def allocate_tasks(view: NetworkView, job: Job, free_memory: dict[str, int],
                   jobs_on: dict[str, set[str]], mean_bw_mbit: float | None = None
                   ) -> dict[str, str] | None:
    """Algorithm 1: place each task (topological order) on the node with the least compute +
    incoming transfer time among nodes with enough free memory. None if a task fits nowhere.
    Transfers are estimated at `mean_bw_mbit` (default: the mean link bandwidth)."""
    free = dict(free_memory)
    where: dict[str, str] = {}
    own_work: dict[str, float] = defaultdict(float)
    mbit = max(mean_bw_mbit if mean_bw_mbit is not None else view.mean_bw_mbit, 1e-6)
    sharers = {n: len(jobs_on.get(n, ())) + (job.name not in jobs_on.get(n, ()))
               for n in view.nodes}
    for task in job.tasks:
        best: tuple[float, int, str] | None = None
        incoming = [(where[p], d * 8 / (mbit * 1e6)) for p, d in task.inputs]
        if not task.inputs and job.input_bytes:
            incoming = [(job.source, job.input_bytes * 8 / (mbit * 1e6))]
        for rank, (name, node) in enumerate(view.nodes.items()):
            if free[name] < task.memory_bytes or (task.node and task.node != name):
                continue
            t_comp = (own_work[name] + task.work) * sharers[name] / node.speed_gops
            t_comm = max((t for v, t in incoming if v != name), default=0.0)
            cand = (t_comp + t_comm, rank, name)
            if best is None or cand < best:
                best = cand
        if best is None:
            return None
        node = best[2]
        where[task.name] = node
        free[node] -= task.memory_bytes
        own_work[node] += task.work
    return where


def demands(job: Job, where: dict[str, str]) -> list[Demand]:
    """The flows a placement causes: DAG edges between different nodes, and the job's input
    from its source node to entry tasks placed elsewhere."""
    out = []
    for t in job.tasks:
        if not t.inputs and job.input_bytes and where[t.name] != job.source:
            out.append(Demand(job.name, "", t.name, job.source, where[t.name], job.input_bytes))
        for pred, volume in t.inputs:
            if where[pred] != where[t.name]:
                out.append(Demand(job.name, pred, t.name, where[pred], where[t.name], volume))
    return out


@dataclass(frozen=True)
class Routing:
    paths: dict[tuple[str, str, str], tuple[str, ...]]
    rates: dict[tuple[str, str, str], float]  # Mbit/s
    lp_bound_s: float  # optimum of P3-RELAX-CVX: no routing/bandwidth beats max V_i/b_i below it


def jrba(view: NetworkView, flows: list[Demand], capacity: dict[tuple[str, str], float],
         need_mbit: dict[tuple[str, str, str], float] | None = None) -> Routing | None:
    """Algorithm 2. `capacity`: Mbit/s available per link. None if some flow has no path with
    capacity left."""
    if not flows:
        return Routing({}, {}, 0.0)
    cands = [view.paths(f.src, f.dst) for f in flows]
    first_col = np.cumsum([1] + [len(ps) for ps in cands])  # flow i: columns first_col[i]...
    links = sorted({lk for ps in cands for p in ps for lk in path_links(p)})
    row = {lk: r for r, lk in enumerate(links)}
    n_rows, n_cols = len(links) + len(flows), int(first_col[-1])
    # variables: TH, then m_i^k per flow i and candidate path k (Mbit per item)
    # link rows: sum of m over paths using l - B_l * TH <= 0 ; flow rows: -sum_k m_ik <= -V_i
    rows, cols, vals = [], [], []
    for lk, r in row.items():
        rows.append(r), cols.append(0), vals.append(-capacity.get(lk, 0.0))
    for i, ps in enumerate(cands):
        for k, p in enumerate(ps):
            c = int(first_col[i]) + k
            for lk in path_links(p):
                rows.append(row[lk]), cols.append(c), vals.append(1.0)
            rows.append(len(links) + i), cols.append(c), vals.append(-1.0)
    from scipy.optimize import linprog  # here: scipy takes 0.3 s to import, every CLI call
    from scipy.sparse import coo_matrix

    a = coo_matrix((vals, (rows, cols)), shape=(n_rows, n_cols)).tocsr()
    b = np.zeros(n_rows)
    b[len(links):] = [-f.volume_bytes * 8 / 1e6 for f in flows]
    cost = np.zeros(n_cols)
    cost[0] = 1.0
    res = linprog(cost, A_ub=a, b_ub=b, bounds=(0, None), method="highs")
    if res.status != 0:
        return None
    paths = {}
    for i, f in enumerate(flows):
        m_i = res.x[int(first_col[i]):int(first_col[i + 1])]
        paths[f.key] = cands[i][int(np.argmax(m_i))]  # ties: the shorter candidate
    rates = proportional_rates(flows, paths, capacity, need_mbit)
    if any(r <= EPS for r in rates.values()):
        return None
    return Routing(paths, rates, float(res.x[0]))


def proportional_rates(flows: list[Demand], paths, capacity, need_mbit=None
                       ) -> dict[tuple[str, str, str], float]:
    """Eq. 3.15: on each link, flows get capacity in proportion to their volume; a flow's rate
    is its smallest share along its path, capped at what its job can use. Then each job's flows
    are scaled to the job's slowest one (per item, a job moves at its slowest stage), which
    returns the excess to the links for other jobs."""
    volume_on: dict[tuple[str, str], float] = defaultdict(float)
    for f in flows:
        for lk in path_links(paths[f.key]):
            volume_on[lk] += f.volume_bytes
    rates = {}
    for f in flows:
        share = min(f.volume_bytes * capacity.get(lk, 0.0) / volume_on[lk]
                    for lk in path_links(paths[f.key]))
        if need_mbit and f.key in need_mbit:
            share = min(share, need_mbit[f.key])
        rates[f.key] = share
    items_per_s: dict[str, float] = {}
    for f in flows:
        r = rates[f.key] * 1e6 / 8 / f.volume_bytes
        items_per_s[f.job] = min(items_per_s.get(f.job, r), r)
    return {f.key: items_per_s[f.job] * f.volume_bytes * 8 / 1e6 for f in flows}


def equal_rates(paths: dict, capacity: dict[tuple[str, str], float]) -> dict:
    """Flows crossing a link share it equally (the TP baseline, and plain TCP-like sharing)."""
    count: dict[tuple[str, str], int] = defaultdict(int)
    for p in paths.values():
        for lk in path_links(p):
            count[lk] += 1
    return {key: min(capacity[lk] / count[lk] for lk in path_links(p))
            for key, p in paths.items()}
