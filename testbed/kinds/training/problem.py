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

    @classmethod
    def mean(cls, profiles: list[BlockProfile]) -> BlockProfile:
        """Per-block times averaged over profiles of the same model (taken at once)."""
        if len(profiles) == 1:
            return profiles[0]
        first = profiles[0]
        avg = [tuple(float(np.mean(v)) for v in zip(*times, strict=True))
               for times in ([p.forward_s for p in profiles], [p.backward_s for p in profiles])]
        return cls(avg[0], avg[1], first.activation_bytes, first.param_bytes)

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
    device_forward_s: np.ndarray | None = None  # (M, N) the forward part of device_s
    one_batch_at_a_time: bool = False  # the server's mode: SplitPipe (True) or non-pipe
    server_per_device: bool = False  # each device's server part on a CPU slice of its own

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
        one server serving M devices cannot. This plays one round out in time, with no
        parameter of its own: every device downloads its weights, then per batch runs its
        forward blocks, sends the activations, waits for the server's part, receives the
        gradients and runs its backward blocks, and at the end uploads its weights; every
        transfer at the device's own rate. The server either runs every waiting batch at
        once, each at 1/n of its speed alone (split-nonpipe: one thread per device), or one
        batch at a time in arrival order (SplitPipe). Devices that start together and run
        at similar speeds reach the server together, which is why the round can take nearly
        all the devices' server work. With one device, or all local, or each device's server
        part on a slice of the server's CPU of its own (`server_per_device`), it is eq. 4.5."""
        if self.device_s is None or self.server_s is None or self.activation_mbit is None or \
                self.server_per_device:
            return self.round_times(cuts, bw)
        i, b = np.arange(len(self.devices)), self.batches
        rate = np.maximum(bw, 1e-12)
        act = self.activation_mbit[cuts - 1]
        weights = np.where(self.C[cuts - 1] > 0, (self.C[cuts - 1] - act) / rate, 0.0)
        own = self.device_s[i, cuts - 1] / b
        fwd = self.device_forward_s[i, cuts - 1] / b if self.device_forward_s is not None \
            else own / 2
        hop = np.where(act > 0, act / rate, 0.0) / b / 2  # one batch's transfer, one way
        server = self.server_s[cuts - 1] / b
        phases = []
        for k in i:
            batch = [(False, fwd[k] + hop[k]), (True, server[k]), (False, hop[k] + own[k] - fwd[k])]
            phases.append([(False, weights[k] / 2), *batch * b, (False, weights[k] / 2)])
        return _play(phases, together=not self.one_batch_at_a_time)


def _play(phases: list[list[tuple[bool, float]]], together: bool) -> np.ndarray:
    """When each device ends its list of (at the server?, seconds alone) phases, the server
    shared by processor sharing (together) or first come, first served."""
    m = len(phases)
    step = [0] * m
    left = [phases[k][0][1] if phases[k] else 0.0 for k in range(m)]
    arrived = [0.0] * m  # when the device's current server phase began waiting
    done = np.zeros(m)
    now = 0.0
    for _ in range(sum(len(p) for p in phases) * 2 + 10):
        for k in range(m):  # skip finished and empty phases
            while step[k] < len(phases[k]) and left[k] <= 1e-12:
                step[k] += 1
                if step[k] < len(phases[k]):
                    left[k] = phases[k][step[k]][1]
                    arrived[k] = now
                else:
                    done[k] = now
        live = [k for k in range(m) if step[k] < len(phases[k])]
        if not live:
            return done
        queue = [k for k in live if phases[k][step[k]][0]]
        speed = dict.fromkeys(live, 1.0)
        if queue:
            first = min(queue, key=lambda k: (arrived[k], k))
            for k in queue:
                speed[k] = 1.0 / len(queue) if together else float(k == first)
        dt = min(left[k] / speed[k] for k in live if speed[k] > 0)
        now += dt
        for k in live:
            left[k] -= dt * speed[k]
    raise RuntimeError("round simulation did not end")  # pragma: no cover


def build(devices: tuple[str, ...], profiles: dict[str, BlockProfile], server: str,
          memory_bytes: dict[str, int], batches: int, total_mbit: float,
          one_batch_at_a_time: bool = False, server_per_device: bool = False) -> Problem:
    """The problem on `profiles` by node; with `server_per_device`, the server's profile is
    the one taken on a device's slice of it (1/M of its CPU)."""
    srv = profiles[server]
    n = len(srv.forward_s)
    server_after = np.array([sum(srv.forward_s[j:]) + sum(srv.backward_s[j:])
                             for j in range(1, n + 1)])
    local, forward, feasible = [], [], []
    for d in devices:
        p = profiles[d]
        local.append(batches * np.cumsum(np.array(p.forward_s) + np.array(p.backward_s)))
        forward.append(batches * np.cumsum(p.forward_s))
        feasible.append([p.train_memory_bytes(j) <= memory_bytes[d] for j in range(1, n + 1)])
    act = np.array(srv.activation_bytes, dtype=float)
    params = np.cumsum(np.array(srv.param_bytes, dtype=float))
    # the last block's output stays on the device (all local): only weights travel
    per_batch = np.where(np.arange(1, n + 1) < n, act, 0.0)
    c = 2 * (batches * per_batch + params) * 8 / 1e6
    dev, srv_s = np.array(local), batches * server_after
    return Problem(devices, dev + srv_s[None, :], c, np.array(feasible), total_mbit, batches,
                   dev, srv_s, 2 * batches * per_batch * 8 / 1e6, np.array(forward),
                   one_batch_at_a_time, server_per_device)
