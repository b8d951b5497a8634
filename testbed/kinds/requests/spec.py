"""Requests files (a user-facing contract) and the dispatch problem they pose on a topology.

    kind: requests
    service: {name: classify, work: {per_mb: 0.4, base: 0.02}}   # giga-operations per request
    edges: "*"                     # nodes that run the service (or a list)
    replicas: {e1: 2, e2: 1}       # per edge; absent ones drawn from 1-4 with arrivals.seed
    period: 1s                     # scheduling period
    arrivals: {per_period: 20, seed: 3}
    size: {uniform: [50kB, 500kB]}
    backlog: {seed: 3}             # optional initial backlogs (section V-A's rules)
    duration: 30s

`service.model` names a torch model (workloads/models.py) instead of synthetic `work`;
`service.variants` lists model variants a policy may choose per request (accuracy vs time).
A period's problem on a topology: an edge's time per MB is its work per MB over its speed
(GOPS) shared by its replicas, and moving data costs 8 / (the shortest path's bottleneck
Mbit/s) seconds per MB. In a run, measured profiles replace both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from testbed.errors import InputError
from testbed.kinds.requests.instance import GENERATION, Instance
from testbed.schedulers.network import NetworkView
from testbed.topology.loader import parse_model, read_yaml
from testbed.topology.model import Topology
from testbed.topology.schema import Seconds, Strict
from testbed.units import parse_size_bytes

MB = 1e6


class WorkSpec(Strict):
    per_mb: float = Field(ge=0, description="giga-operations per MB of input")
    base: float = Field(0.0, ge=0, description="giga-operations per request")


class VariantSpec(Strict):
    name: str
    work_factor: float = Field(gt=0, description="work relative to the first variant")
    accuracy: float = Field(ge=0, le=100, description="top-1 %, reported per request")


class ServiceSpec(Strict):
    name: str = "service"
    model: str | None = Field(None, description="torch model each request runs with "
                              "--compute torch (one forward pass per image it holds)")
    image: str | int = Field("100kB", description="bytes per image of a request (torch mode)")
    work: WorkSpec = WorkSpec(per_mb=0.4, base=0.02)
    variants: list[VariantSpec] = Field([], description="most accurate first")


class ArrivalsSpec(Strict):
    per_period: int = Field(ge=1, le=100_000)
    seed: int = 0


class SizeSpec(Strict):
    uniform: tuple[str | int, str | int]

    @model_validator(mode="after")
    def _ordered(self) -> SizeSpec:
        lo, hi = (parse_size_bytes(v) for v in self.uniform)
        if not 0 < lo <= hi:
            raise ValueError(f"uniform: [{self.uniform[0]}, {self.uniform[1]}] needs "
                             "0 < low <= high, e.g. [50kB, 500kB]")
        return self

    @property
    def bytes(self) -> tuple[int, int]:
        lo, hi = (parse_size_bytes(v) for v in self.uniform)
        return lo, hi


class BacklogSpec(Strict):
    seed: int = 0


class RequestsFile(Strict):
    kind: Literal["requests"]
    service: ServiceSpec = ServiceSpec()
    edges: Literal["*"] | list[str] = "*"
    replicas: dict[str, int] = {}
    period: Seconds = Field(1.0, gt=0)
    arrivals: ArrivalsSpec
    size: SizeSpec = SizeSpec(uniform=("50kB", "500kB"))
    backlog: BacklogSpec | None = None
    duration: Seconds = Field(30.0, gt=0)


@dataclass(frozen=True)
class Workload:
    """A checked requests file on a topology."""

    spec: RequestsFile
    edges: tuple[str, ...]
    replicas: tuple[int, ...]
    source: str  # the file, for messages

    @property
    def name(self) -> str:
        return self.spec.service.name

    @property
    def periods(self) -> int:
        return max(1, int(round(self.spec.duration / self.spec.period)))


def loads(text: str, source: str, topo: Topology) -> Workload:
    spec = parse_model(RequestsFile, read_yaml(text, source), source)
    names = [n.name for n in topo.nodes]
    edges = names if spec.edges == "*" else spec.edges
    for i, e in enumerate(edges):
        if e not in names:
            raise InputError(f"{source}: edges[{i}]: {e!r} is not a node of "
                             f"{topo.name}; fix: use one of {', '.join(names)}")
    if len(edges) < 1:
        raise InputError(f"{source}: edges: empty; fix: list nodes or write \"*\"")
    for e, n in spec.replicas.items():
        if e not in edges:
            raise InputError(f"{source}: replicas.{e}: not one of the edges; fix: use one "
                             f"of {', '.join(edges)}")
        if not 1 <= n <= 64:
            raise InputError(f"{source}: replicas.{e}: {n} is out of range; fix: 1-64")
    try:
        parse_size_bytes(spec.service.image)
    except ValueError as e:
        raise InputError(f"{source}: service.image: {e}") from None
    rng = np.random.default_rng(spec.arrivals.seed)
    lo, hi = GENERATION["replicas"]
    drawn = rng.integers(lo, hi + 1, size=len(edges))
    replicas = tuple(int(spec.replicas.get(e, drawn[i])) for i, e in enumerate(edges))
    return Workload(spec, tuple(edges), replicas, source)


def transfer_s_per_mb(view: NetworkView, edges: tuple[str, ...]) -> np.ndarray:
    """(Q, Q) seconds per MB along each pair's shortest path (its bottleneck link)."""
    q = len(edges)
    out = np.zeros((q, q))
    for i, a in enumerate(edges):
        for j, b in enumerate(edges):
            if i != j:
                path = view.paths(a, b)[0]
                rate = min(view.links[view_key(u, v)] for u, v in zip(path, path[1:],
                                                                       strict=False))
                out[i, j] = 8.0 / rate
    return out


def view_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class EdgeModel:
    """What predicts a period: each edge's linear time per MB (one replica) and the data
    moving cost. From the topology offline; from profiles measured in the nodes in a run."""

    slope_s_per_mb: np.ndarray
    intercept_s: np.ndarray
    replicas: np.ndarray
    transfer_s_per_mb: np.ndarray


def offline_model(w: Workload, view: NetworkView) -> EdgeModel:
    """Time per request on edge q for one replica: work / (GOPS x share of the CPU a replica
    gets when n replicas share c cores: min(1, c / n) of one core's speed)."""
    slope, icpt = [], []
    for e, n in zip(w.edges, w.replicas, strict=True):
        node = view.nodes[e]
        per_core = node.speed_gops / max(node.cores, 1e-9)
        replica_gops = per_core * min(1.0, node.cores / n)
        slope.append(w.spec.service.work.per_mb / replica_gops)
        icpt.append(w.spec.service.work.base / replica_gops)
    return EdgeModel(np.array(slope), np.array(icpt), np.array(w.replicas, dtype=float),
                     transfer_s_per_mb(view, w.edges))


@dataclass(frozen=True)
class Request:
    name: str
    period: int
    source: int  # edge index
    size_bytes: int


def arrivals(w: Workload, duration_s: float | None = None) -> list[list[Request]]:
    """Every period's new requests (sources uniform over edges, sizes uniform), seeded;
    `duration_s` overrides the file's duration (a run's --duration, a campaign's)."""
    rng = np.random.default_rng(w.spec.arrivals.seed + 1)
    lo, hi = w.spec.size.bytes
    periods = w.periods if duration_s is None else \
        max(1, int(round(duration_s / w.spec.period)))
    out = []
    for p in range(periods):
        n = w.spec.arrivals.per_period
        src = rng.integers(0, len(w.edges), size=n)
        size = rng.integers(lo, hi + 1, size=n)
        out.append([Request(f"p{p}-r{k}", p, int(src[k]), int(size[k])) for k in range(n)])
    return out


def instance(w: Workload, model: EdgeModel, new: list[Request], backlog_local_s: np.ndarray,
             backlog_transfer_s: np.ndarray, backlog_in_s: np.ndarray) -> Instance:
    """The period's dispatch problem (sizes in MB, times in seconds)."""
    variants = w.spec.service.variants
    return Instance(model.slope_s_per_mb, model.intercept_s, model.replicas.astype(int),
                    model.transfer_s_per_mb, backlog_local_s, backlog_transfer_s,
                    backlog_in_s, source=np.array([r.source for r in new], dtype=int),
                    size=np.array([r.size_bytes / MB for r in new]),
                    variant_work=np.array([v.work_factor for v in variants])
                    if variants else None)


def initial_backlog(w: Workload, model: EdgeModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Section V-A's backlogs on this topology: 0-10 local and 0-10 transferred-in requests
    per edge with sizes from the file's range (zeros without `backlog:`)."""
    q = len(w.edges)
    if w.spec.backlog is None:
        return np.zeros(q), np.zeros(q), np.zeros(q)
    rng = np.random.default_rng(w.spec.backlog.seed)
    lo, hi = (b / MB for b in w.spec.size.bytes)
    c_lo, c_hi = GENERATION["backlog_count"]
    w_loc, w_trans, w_in = np.zeros(q), np.zeros(q), np.zeros(q)
    f = model
    for e in range(q):
        sizes = rng.uniform(lo, hi, size=rng.integers(c_lo, c_hi + 1))
        w_loc[e] = (f.slope_s_per_mb[e] * sizes + f.intercept_s[e]).sum() / f.replicas[e]
        n_in = rng.integers(c_lo, c_hi + 1)
        srcs = rng.integers(0, q, size=n_in)
        sizes = rng.uniform(lo, hi, size=n_in)
        w_in[e] = (f.slope_s_per_mb[e] * sizes + f.intercept_s[e]).sum() / f.replicas[e]
        w_trans[e] = (sizes * f.transfer_s_per_mb[srcs, e]).max() if n_in else 0.0
    return w_loc, w_trans, w_in
