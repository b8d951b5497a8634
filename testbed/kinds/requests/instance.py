"""One scheduling period of request dispatch (CoRaiS, seeds/004 section III): edges with a
linear time-vs-size function and service replicas, their backlogs, the new requests at their
source edges, and the predicted time to answer all of them for a dispatch (eqs. 5-9).

The equations are lost in the seed's text extraction; they are rebuilt from its prose:
- f_q(d) = a_q * d + b_q is edge q's compute time for input size d; its n_q replicas share
  the work, so a queue of requests costs sum f_q / n_q (eqs. 1, 3, 5, 6).
- moving request z from its source s to edge q takes size_z * D[s, q] (D: seconds per unit
  of data; the paper's distance times its speed constant), edges receive from all senders in
  parallel, so the transfer phase of q lasts max over the requests sent to it (eqs. 2, 7, 8).
- local work and incoming transfers overlap; transferred requests run once both are done:
  T_q = max(T_local_q, T_transfer_q) + T_in_q (eq. 9); the makespan is max_q T_q (eq. 4).
Instance generation follows section V-A; its numeric ranges are lost too, so ours are
written in `GENERATION` and said in docs/results.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Our choices for the ranges section V-A draws from (the seed's text lost the numbers).
GENERATION = {
    "coordinates": (0.0, 1.0),  # uniform in the unit square; D = euclidean distance * SPEED
    "replicas": (1, 4),  # integers, inclusive
    "slope_s_per_unit": (0.1, 1.0),  # a_q
    "intercept_s": (0.0, 0.1),  # b_q
    "backlog_count": (0, 3),  # per queue (local, transferred-in), inclusive; see docs/results.md
    "size_units": (0.0, 1.0),  # data size of every request and backlog
    "speed": 1.0,  # seconds per unit of data per unit of distance
}


@dataclass(frozen=True)
class Instance:
    """Everything a dispatch policy sees in one period (all arrays are float64 unless said)."""

    slope: np.ndarray  # (Q,) a_q: seconds per unit of data
    intercept: np.ndarray  # (Q,) b_q: seconds per request
    replicas: np.ndarray  # (Q,) int, n_q >= 1
    transfer: np.ndarray  # (Q, Q) seconds per unit of data from edge p to edge q; 0 on diagonal
    backlog_local_s: np.ndarray  # (Q,) W_loc: compute time left of local backlog (already / n)
    backlog_transfer_s: np.ndarray  # (Q,) W_trans: longest remaining incoming transfer
    backlog_in_s: np.ndarray  # (Q,) W_in: compute time of transferred-in backlog (already / n)
    source: np.ndarray  # (Z,) int: edge where each new request is
    size: np.ndarray  # (Z,) data units of each new request
    coords: np.ndarray | None = None  # (Q, 2) where generated instances place edges
    variant_work: np.ndarray | None = None  # (V,) work of each service variant vs the first

    @property
    def edges(self) -> int:
        return len(self.slope)

    @property
    def requests(self) -> int:
        return len(self.size)

    def compute_s(self, variant: np.ndarray | None = None) -> np.ndarray:
        """(Z, Q): each request's compute time on each edge, shared over its replicas (scaled
        by the work of the service variant chosen for it, if any)."""
        t = (self.slope[None, :] * self.size[:, None] + self.intercept[None, :]) \
            / self.replicas[None, :]
        if variant is not None and self.variant_work is not None:
            t = t * self.variant_work[variant][:, None]
        return t

    def transfer_s(self) -> np.ndarray:
        """(Z, Q): time to move each request's data from its source to each edge."""
        return self.size[:, None] * self.transfer[self.source, :]


def edge_times(inst: Instance, dispatch: np.ndarray, variant: np.ndarray | None = None
               ) -> np.ndarray:
    """T_q (eq. 9) for one dispatch (Z,) of edge indices, or a batch (S, Z) -> (S, Q)."""
    d = np.atleast_2d(dispatch)
    z = np.arange(inst.requests)
    comp = inst.compute_s(variant)[z[None, :], d]  # (S, Z)
    moved = inst.transfer_s()[z[None, :], d]
    local = d == inst.source[None, :]
    Q = inst.edges
    onehot = np.zeros((*d.shape, Q))
    np.put_along_axis(onehot, d[..., None], 1.0, axis=-1)
    t_local = inst.backlog_local_s + np.einsum("sz,szq->sq", comp * local, onehot)
    t_in = inst.backlog_in_s + np.einsum("sz,szq->sq", comp * ~local, onehot)
    t_move = np.maximum(inst.backlog_transfer_s, (moved * ~local)[..., None] * onehot).max(1) \
        if inst.requests else np.broadcast_to(inst.backlog_transfer_s, t_local.shape)
    out = np.maximum(t_local, t_move) + t_in
    return out[0] if np.ndim(dispatch) == 1 else out


def makespan(inst: Instance, dispatch: np.ndarray, variant: np.ndarray | None = None
             ) -> np.ndarray | float:
    """max_q T_q (eq. 4): one value, or one per dispatch of a batch."""
    t = edge_times(inst, dispatch, variant)
    return float(t.max()) if t.ndim == 1 else t.max(-1)


def request_times(inst: Instance, dispatch: np.ndarray, variant: np.ndarray | None = None
                  ) -> np.ndarray:
    """Each request's predicted response time under the same model: on its edge, local
    requests in order after the local backlog, transferred ones after local work and all
    transfers, behind the transferred-in backlog. The last request of an edge ends at T_q."""
    comp = inst.compute_s(variant)[np.arange(inst.requests), dispatch]
    local = dispatch == inst.source
    times = np.zeros(inst.requests)
    t_edge = edge_times(inst, dispatch, variant)
    for q in range(inst.edges):
        mine_local = np.flatnonzero((dispatch == q) & local)
        mine_in = np.flatnonzero((dispatch == q) & ~local)
        times[mine_local] = inst.backlog_local_s[q] + np.cumsum(comp[mine_local])
        t_local = inst.backlog_local_s[q] + comp[mine_local].sum()
        start_in = t_edge[q] - inst.backlog_in_s[q] - comp[mine_in].sum()
        times[mine_in] = max(start_in, t_local) + inst.backlog_in_s[q] + np.cumsum(comp[mine_in])
    return times


def generate(edges: int, requests: int, rng: np.random.Generator) -> Instance:
    """A random instance as in the seed's section V-A (ranges: `GENERATION`)."""
    g = GENERATION
    coords = rng.uniform(*g["coordinates"], size=(edges, 2))
    transfer = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1) * g["speed"]
    replicas = rng.integers(g["replicas"][0], g["replicas"][1] + 1, size=edges)
    slope = rng.uniform(*g["slope_s_per_unit"], size=edges)
    intercept = rng.uniform(*g["intercept_s"], size=edges)
    lo, hi = g["backlog_count"]
    w_loc, w_trans, w_in = np.zeros(edges), np.zeros(edges), np.zeros(edges)
    for q in range(edges):
        sizes = rng.uniform(*g["size_units"], size=rng.integers(lo, hi + 1))
        w_loc[q] = (slope[q] * sizes + intercept[q]).sum() / replicas[q]
        n_in = rng.integers(lo, hi + 1)
        srcs = rng.integers(0, edges, size=n_in)
        sizes = rng.uniform(*g["size_units"], size=n_in)
        w_in[q] = (slope[q] * sizes + intercept[q]).sum() / replicas[q]
        w_trans[q] = (sizes * transfer[srcs, q]).max() if n_in else 0.0
    return Instance(slope, intercept, replicas, transfer, w_loc, w_trans, w_in,
                    source=rng.integers(0, edges, size=requests),
                    size=rng.uniform(*g["size_units"], size=requests), coords=coords)


def features(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    """The learned policy's inputs (section IV-A): per edge its coordinates, a_q, b_q, n_q
    and the three workload values; per request its source's coordinates and its size.
    Instances built from a topology have no coordinates: a 2-D embedding of the transfer
    matrix (classical MDS) stands in for them."""
    xy = inst.coords if inst.coords is not None else embed_2d(inst.transfer)
    edge = np.column_stack([xy, inst.slope, inst.intercept, inst.replicas / 4.0,
                            inst.backlog_local_s, inst.backlog_transfer_s, inst.backlog_in_s])
    req = np.column_stack([xy[inst.source], inst.size])
    return edge.astype(np.float32), req.astype(np.float32)


def embed_2d(distance: np.ndarray) -> np.ndarray:
    """Coordinates whose euclidean distances best match `distance` (classical MDS)."""
    d = (distance + distance.T) / 2
    n = len(d)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d ** 2) @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    xy = vecs[:, top] * np.sqrt(np.clip(vals[top], 0, None))
    if n < 2:
        return np.zeros((n, 2))
    return xy - xy.min(0)
