"""Dispatch policies: pure functions from one period's `Instance` to the edge of every new
request. Registered in the scheduler registry under the `requests` kind; a name may carry an
argument after a colon (`ilp:50ms`, `random:100`, `corais:sample=1000`).

Add your own: `register_policy("mine", fn, "one line")` with
`fn(inst, rng, arg) -> Dispatch`; `arg` is the text after the colon ("" when absent).
A policy may also pick a model variant per request (`Dispatch.variant`, an index into the
service's `variants`), which is how offloading-with-model-selection policies plug in
(see `deadline_width`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from testbed.errors import InputError
from testbed.kinds.requests.instance import Instance, makespan
from testbed.units import parse_seconds


@dataclass(frozen=True)
class Dispatch:
    edge: np.ndarray  # (Z,) int: where each request runs
    variant: np.ndarray | None = None  # (Z,) int: which service variant (None: the first)
    optimal: bool = False  # proven optimal (the ILP, when it finished)
    solved: bool = True  # False: the ILP found nothing in time, this is its fallback


Policy = Callable[[Instance, np.random.Generator, str], Dispatch]
POLICIES: dict[str, tuple[Policy, str]] = {}


def register_policy(name: str, fn: Policy, summary: str) -> None:
    POLICIES[name] = (fn, summary)
    from testbed.schedulers import register

    register(name, fn, summary, kind="requests")  # listed by `testbed schedulers`


def policy(spec: str) -> tuple[Policy, str]:
    """(function, argument) of a spec like `ilp:10s`; a clear error for unknown names."""
    name, _, arg = spec.partition(":")
    if name not in POLICIES:
        raise InputError(f"unknown requests policy {name!r}; choose one of "
                         f"{', '.join(POLICIES)} (arguments after a colon, e.g. ilp:50ms)")
    return POLICIES[name][0], arg


def decide(spec: str, inst: Instance, seed: int = 0) -> tuple[Dispatch, float]:
    """Run a policy once: its dispatch and the wall time it took (seconds)."""
    fn, arg = policy(spec)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    out = fn(inst, rng, arg)
    return out, time.perf_counter() - t0


def local(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    """Every request at its source edge (the paper's Local)."""
    return Dispatch(inst.source.copy())


def best_of_random(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    """`random:N`: N uniformly random dispatches, the best one kept (the paper's Random(N))."""
    n = _count(arg or "1", "random")
    tries = rng.integers(0, inst.edges, size=(n, inst.requests))
    return Dispatch(tries[int(np.argmin(makespan(inst, tries)))])


def greedy_ect(inst: Instance, rng: np.random.Generator, arg: str,
               variant: np.ndarray | None = None) -> Dispatch:
    """Earliest estimated completion: requests, largest first, each to the edge whose
    predicted time T_q (eq. 9, with what is assigned so far) grows least."""
    comp, moved = inst.compute_s(variant), inst.transfer_s()
    t_local, t_in = inst.backlog_local_s.copy(), inst.backlog_in_s.copy()
    t_move = inst.backlog_transfer_s.copy()
    out = np.empty(inst.requests, dtype=int)
    for z in np.argsort(-inst.size):
        is_local = np.arange(inst.edges) == inst.source[z]
        nl = np.where(is_local, t_local + comp[z], t_local)
        ni = np.where(is_local, t_in, t_in + comp[z])
        nm = np.where(is_local, t_move, np.maximum(t_move, moved[z]))
        cand = np.maximum(nl, nm) + ni
        q = int(np.argmin(cand))
        out[z] = q
        t_local[q], t_in[q], t_move[q] = nl[q], ni[q], nm[q]
    return Dispatch(out, variant)


def ilp(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    """The paper's formulation (eqs. 4-11) as a MILP solved by HiGHS within `arg` (default
    10 s). Variables: x[z, q] binary, then per edge L (local), R (transfer), S = max(L, R),
    and the makespan T. Without a solution in time, the best of local and greedy-ect."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    try:
        limit = parse_seconds(arg) if arg else 10.0
    except ValueError as e:
        raise InputError(f"ilp:{arg}: {e}") from None
    Z, Q = inst.requests, inst.edges
    comp, moved = inst.compute_s(), inst.transfer_s()
    is_local = (inst.source[:, None] == np.arange(Q)[None, :]).ravel()
    nx = Z * Q
    iL, iR, iS, iT = nx, nx + Q, nx + 2 * Q, nx + 3 * Q
    n = iT + 1
    xj = np.arange(nx)  # x[z, q] is column z * Q + q
    xq = xj % Q
    far = np.flatnonzero(~is_local)
    nr = len(far)
    rows, cols, vals = [], [], []

    def put(r, c, v) -> None:
        rows.append(np.asarray(r).ravel())
        cols.append(np.asarray(c).ravel())
        vals.append(np.broadcast_to(np.asarray(v, dtype=float), np.shape(r)).ravel())

    # rows [0, Z): eqs. 10-11, each request to exactly one edge
    put(xj // Q, xj, 1.0)
    # rows Z + q: L_q - sum of local compute = W_loc (eq. 5)
    loc = np.flatnonzero(is_local)
    put(Z + np.arange(Q), iL + np.arange(Q), 1.0)
    put(Z + xq[loc], loc, -comp.ravel()[loc])
    # rows Z + Q + k: R_q - moved * x >= 0 for each transferred (z, q) (eqs. 7-8)
    base = Z + Q
    put(base + np.arange(nr), iR + xq[far], 1.0)
    put(base + np.arange(nr), far, -moved.ravel()[far])
    # S_q >= L_q and S_q >= R_q
    base += nr
    put(base + np.arange(Q), iS + np.arange(Q), 1.0)
    put(base + np.arange(Q), iL + np.arange(Q), -1.0)
    put(base + Q + np.arange(Q), iS + np.arange(Q), 1.0)
    put(base + Q + np.arange(Q), iR + np.arange(Q), -1.0)
    # T - S_q - sum of transferred compute >= W_in (eq. 9)
    base += 2 * Q
    put(base + np.arange(Q), np.full(Q, iT), 1.0)
    put(base + np.arange(Q), iS + np.arange(Q), -1.0)
    put(base + xq[far], far, -comp.ravel()[far])
    m = base + Q
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(m, n))
    lo = np.concatenate([np.ones(Z), inst.backlog_local_s, np.zeros(nr + 2 * Q),
                         inst.backlog_in_s])
    hi = np.concatenate([np.ones(Z), inst.backlog_local_s, np.full(nr + 3 * Q, np.inf)])
    lower = np.zeros(n)
    lower[iR:iR + Q] = inst.backlog_transfer_s
    c = np.zeros(n)
    c[iT] = 1.0
    integrality = np.zeros(n)
    integrality[:nx] = 1
    upper = np.full(n, np.inf)
    upper[:nx] = 1.0
    res = milp(c, constraints=LinearConstraint(a.tocsr(), lo, hi), integrality=integrality,
               bounds=Bounds(lower, upper), options={"time_limit": limit, "disp": False})
    fallback = min((local(inst, rng, ""), greedy_ect(inst, rng, "")),
                   key=lambda d: makespan(inst, d.edge))
    if res.x is None:
        return replace(fallback, solved=False)
    x = res.x[:nx].reshape(Z, Q)
    edge = np.argmax(x, axis=1)
    if makespan(inst, edge) > makespan(inst, fallback.edge):
        return fallback
    return Dispatch(edge, optimal=res.status == 0)


def deadline_variant(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    """Offloading with model selection (the shape of seeds 001/002, MutualNet's widths):
    every request gets the most accurate variant (variants are listed most accurate first)
    whose greedy-ect dispatch answers all requests within the deadline `arg`
    (`deadline-variant:1.5s`); failing that, the cheapest variant. One variant for the whole
    period keeps it simple; a policy may as well choose per request."""
    if inst.variant_work is None or len(inst.variant_work) < 2:
        raise InputError("deadline-variant needs service.variants (two or more) in the "
                         "requests file, most accurate first")
    try:
        deadline = parse_seconds(arg) if arg else 1.0
    except ValueError as e:
        raise InputError(f"deadline-variant:{arg}: {e}") from None
    for v in range(len(inst.variant_work)):
        choice = np.full(inst.requests, v)
        d = greedy_ect(inst, rng, "", choice)
        if makespan(inst, d.edge, choice) <= deadline:
            return d
    return d


def _count(text: str, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"{what}:{text}: the argument is a number of tries >= 1, "
                         f"e.g. {what}:100")
    return n


register_policy("local", local, "every request runs at its source edge")
register_policy("random", best_of_random, "best of N random dispatches (random:100)")
register_policy("greedy-ect", greedy_ect, "largest first, each to the edge whose "
                "predicted completion grows least")
register_policy("deadline-variant", deadline_variant, "offloading with model selection: the "
                "most accurate service variant whose dispatch meets a deadline "
                "(deadline-variant:1.5s)")
register_policy("ilp", ilp, "CoRaiS's ILP (eqs. 4-11) solved by HiGHS within a time "
                "limit (ilp:10s, ilp:50ms)")


def _corais(inst: Instance, rng: np.random.Generator, arg: str) -> Dispatch:
    from testbed.kinds.requests.corais import corais  # torch is imported only when used

    return corais(inst, rng, arg)


register_policy("corais", _corais, "CoRaiS attention policy, greedy or best of N "
                "samples (corais:sample=1000, corais:policy=NAME)")
