"""EdgeSplit's Algorithm 6 and its three baselines as pure functions of a Problem: each device's
cut (how many blocks it trains) and bandwidth (Mbit/s of goodput between it and the server).

P2 (the bandwidths for fixed cuts) minimises max_i a_i + c_i / B_i subject to sum B_i <= B.
At the optimum every device finishes together at T, so B_i = c_i / (T - a_i) and T solves
sum_i c_i / (T - a_i) = B, which is decreasing in T: bisection finds it to 1 us.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from testbed.errors import InputError
from testbed.kinds.training.problem import Problem


@dataclass(frozen=True)
class Split:
    cuts: np.ndarray  # (M,) blocks each device trains (1..N; N = all local)
    bandwidth_mbit: np.ndarray  # (M,)
    round_s: np.ndarray  # (M,) predicted round time per device (eq. 4.5)
    iterations: int = 1

    @property
    def makespan_s(self) -> float:
        return float(self.round_s.max())


def allocate(a: np.ndarray, c: np.ndarray, total: float) -> tuple[np.ndarray, float]:
    """P2: bandwidths that finish every communicating device at the same time T."""
    talk = c > 0
    if not talk.any():
        return np.zeros_like(a), float(a.max())
    lo = float(a[talk].max())
    hi = float(a.max()) + float(c.sum()) / total
    for _ in range(200):  # bisection to float precision: near a device's own time a
        mid = (lo + hi) / 2  # microsecond moves its bandwidth by a lot
        need = (c[talk] / np.maximum(mid - a[talk], 1e-15)).sum()
        lo, hi = (mid, hi) if need > total else (lo, mid)
        if hi - lo <= 1e-14 * hi:
            break
    t = max(hi, float(a[~talk].max()) if (~talk).any() else hi)
    bw = np.zeros_like(a)
    bw[talk] = c[talk] / np.maximum(hi - a[talk], 1e-15)
    return bw, t


def _finish(p: Problem, cuts: np.ndarray, bw: np.ndarray, iterations: int = 1) -> Split:
    return Split(cuts, bw, p.round_times(cuts, bw), iterations)


def _require(p: Problem, cuts: np.ndarray, what: str) -> None:
    for i, j in enumerate(cuts):
        if not p.feasible[i, j - 1]:
            raise InputError(f"{what}: device {p.devices[i]} cannot hold blocks 1-{j} of the "
                             "model in its memory; fix: give it more memory or use edgesplit "
                             "(it chooses a cut that fits)")


def _with_p2(p: Problem, cuts: np.ndarray) -> Split:
    i = np.arange(len(p.devices))
    bw, _ = allocate(p.A[i, cuts - 1], p.C[cuts - 1], p.total_mbit)
    return _finish(p, cuts, bw)


def vanilla_fl(p: Problem) -> Split:
    """FedAvg: every device trains the whole model; the bandwidth is shared equally."""
    cuts = np.full(len(p.devices), p.blocks)
    _require(p, cuts, "vanilla-fl")
    return _finish(p, cuts, np.full(len(p.devices), p.total_mbit / len(p.devices)))


def adaptive_fl(p: Problem) -> Split:
    """All local, bandwidth by P2."""
    cuts = np.full(len(p.devices), p.blocks)
    _require(p, cuts, "adaptive-fl")
    return _with_p2(p, cuts)


def edgesplit_fix(p: Problem) -> Split:
    """Half the blocks on every device (SplitFed's fixed cut), bandwidth by P2."""
    cuts = np.full(len(p.devices), max(1, p.blocks // 2))
    _require(p, cuts, "edgesplit-fix")
    return _with_p2(p, cuts)


def edgesplit(p: Problem, max_iterations: int = 100) -> Split:
    """Algorithm 6: from equal bandwidths, alternate each device's best feasible cut for its
    bandwidth (eq. 4.11) and P2 for those cuts, while the slowest device's time improves."""
    m = len(p.devices)
    none = ~p.feasible.any(axis=1)
    if none.any():
        d = p.devices[int(np.argmax(none))]
        raise InputError(f"edgesplit: no cut of the model fits device {d}'s memory; fix: give "
                         "it more memory, or leave it out of `devices`")
    bw = np.full(m, p.total_mbit / m)
    best: Split | None = None
    for it in range(1, max_iterations + 1):
        t = p.A + p.C[None, :] / np.maximum(bw[:, None], 1e-12)
        cuts = np.where(p.feasible, t, np.inf).argmin(axis=1) + 1
        split = _with_p2(p, cuts)
        if best is not None and split.makespan_s >= best.makespan_s - 1e-9:
            break
        best = Split(split.cuts, split.bandwidth_mbit, split.round_s, it)
        bw = split.bandwidth_mbit
    assert best is not None
    return best


STRATEGIES: dict[str, tuple[Callable[[Problem], Split], str]] = {
    "edgesplit": (edgesplit, "EdgeSplit Algorithm 6: per-device cut (memory-feasible) and "
                  "bandwidth (P2), alternated until the round time stops improving"),
    "edgesplit-fix": (edgesplit_fix, "EdgeSplit-Fix: half the blocks on each side, P2 "
                      "bandwidth"),
    "adaptive-fl": (adaptive_fl, "Adaptive FL: all blocks local, P2 bandwidth"),
    "vanilla-fl": (vanilla_fl, "Vanilla FL (FedAvg): all local, equal bandwidth"),
}


def decide(name: str, p: Problem) -> Split:
    if name not in STRATEGIES:
        raise InputError(f"unknown training strategy {name!r}; choose one of "
                         f"{', '.join(STRATEGIES)}")
    return STRATEGIES[name][0](p)
