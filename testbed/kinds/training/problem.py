"""The round-time model of EdgeSplit (thesis eqs. 4.1-4.5, 4.10) on measured profiles.

Device i cutting after block j spends per round
    T_i(j, B_i) = A[i, j] + C[j] / B_i
with A[i, j] = b x (device forward+backward of blocks 1..j + server forward+backward of
j+1..N) and C[j] = 2 x (b x O_j + P_j) in Mbit: per batch the activations go up and their
gradients come down, per round the device's weights go down and up. b is batches per round,
O_j the activation bytes of one batch at the cut, P_j the parameter bytes of blocks 1..j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASE_MEMORY_BYTES = 300_000_000  # the Python + torch process itself


@dataclass(frozen=True)
class BlockProfile:
    """One node's per-block seconds for one batch, and the model's sizes (bytes)."""

    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    activation_bytes: tuple[int, ...]  # per batch, at each block's output
    param_bytes: tuple[int, ...]  # per block

    @classmethod
    def from_dict(cls, d: dict) -> BlockProfile:
        return cls(*(tuple(d[k]) for k in ("forward_s", "backward_s", "activation_bytes",
                                            "param_bytes")))

    def scaled(self, factor: float) -> BlockProfile:
        """The same model on a node `factor` times slower."""
        return BlockProfile(tuple(t * factor for t in self.forward_s),
                            tuple(t * factor for t in self.backward_s),
                            self.activation_bytes, self.param_bytes)

    def train_memory_bytes(self, cut: int) -> int:
        """What training blocks 1..cut holds: weights and gradients, each block's output and
        its gradient for one batch, and the process."""
        return int(2 * sum(self.param_bytes[:cut]) + 2 * sum(self.activation_bytes[:cut])
                   + BASE_MEMORY_BYTES)


@dataclass(frozen=True)
class Problem:
    devices: tuple[str, ...]
    A: np.ndarray  # (M, N) seconds per round without communication, cut after block j+1
    C: np.ndarray  # (N,) Mbit per round crossing a device's link at each cut
    feasible: np.ndarray  # (M, N) the device's memory holds its part at that cut
    total_mbit: float
    batches: int
    device_s: np.ndarray | None = None  # (M, N) the device's share of A
    server_s: np.ndarray | None = None  # (N,) the server's share of A
    activation_mbit: np.ndarray | None = None  # (N,) the per-batch part of C (up and down)

    @property
    def blocks(self) -> int:
        return self.A.shape[1]

    def round_times(self, cuts: np.ndarray, bw: np.ndarray) -> np.ndarray:
        """Eq. 4.10 for every device (cuts are block counts 1..N)."""
        i = np.arange(len(self.devices))
        comm = np.where(self.C[cuts - 1] > 0, self.C[cuts - 1] / np.maximum(bw, 1e-12), 0.0)
        return self.A[i, cuts - 1] + comm

    def shared_server_round_times(self, cuts: np.ndarray, bw: np.ndarray) -> np.ndarray:
        """Eq. 4.5 with the server's compute shared by the devices that use it at once.

        Eq. 4.5 prices each device's server-side blocks as if the server served it alone;
        one server serving M devices cannot. Each device is a loop of one batch at a time:
        z_i seconds on its own (its blocks and the batch's transfers), then s_i seconds of
        server work that waits behind the batches of other devices at the server. Mean-value
        analysis of that closed network (one customer per device; the arrival theorem with
        the arriving device's own batch removed) gives the server's response r_i; the round
        is b x (z_i + r_i) plus the weights' transfers. With one device, or all local, it
        is eq. 4.5 exactly."""
        if self.device_s is None or self.server_s is None or self.activation_mbit is None:
            return self.round_times(cuts, bw)
        i, b = np.arange(len(self.devices)), self.batches
        rate = np.maximum(bw, 1e-12)
        act = self.activation_mbit[cuts - 1]
        weights = np.where(self.C[cuts - 1] > 0, (self.C[cuts - 1] - act) / rate, 0.0)
        z = (self.device_s[i, cuts - 1] + np.where(act > 0, act / rate, 0.0)) / b
        s = self.server_s[cuts - 1] / b
        r = s.copy()
        for _ in range(1000):
            queued = r / (z + r) if (z + r > 0).all() else np.zeros_like(r)
            nxt = s * (1 + queued.sum() - queued)
            if np.abs(nxt - r).max() < 1e-9:
                break
            r = 0.5 * (r + nxt)  # damped: the plain iteration can oscillate
        return b * (z + r) + weights


def build(devices: tuple[str, ...], profiles: dict[str, BlockProfile], server: str,
          memory_bytes: dict[str, int], batches: int, total_mbit: float) -> Problem:
    srv = profiles[server]
    n = len(srv.forward_s)
    server_after = np.array([sum(srv.forward_s[j:]) + sum(srv.backward_s[j:])
                             for j in range(1, n + 1)])
    local, feasible = [], []
    for d in devices:
        p = profiles[d]
        local.append(batches * np.cumsum(np.array(p.forward_s) + np.array(p.backward_s)))
        feasible.append([p.train_memory_bytes(j) <= memory_bytes[d] for j in range(1, n + 1)])
    act = np.array(srv.activation_bytes, dtype=float)
    params = np.cumsum(np.array(srv.param_bytes, dtype=float))
    # the last block's output stays on the device (all local): only weights travel
    per_batch = np.where(np.arange(1, n + 1) < n, act, 0.0)
    c = 2 * (batches * per_batch + params) * 8 / 1e6
    dev, srv_s = np.array(local), batches * server_after
    return Problem(devices, dev + srv_s[None, :], c, np.array(feasible), total_mbit, batches,
                   dev, srv_s, 2 * batches * per_batch * 8 / 1e6)
