"""JSTSH (thesis Algorithm 7) and its three baselines as pure functions of a Problem.

Every strategy has two stages, as in the thesis: map each stream to the device that decodes
and detects its frames (x_ik), then place its re-identification (y_jk). Streams are taken
heaviest first (frames per second x work per frame). Memory is reserved per loaded model
(eq. 5.4): a device takes a model only if its memory left allows; when no device can take
another re-ID model, a stream marked `shared` is served by one already deployed, the one with
the least crop transfer + re-ID time (eq. 5.9); a stream that fits nowhere is not placed.

Where Algorithm 7 compares devices by CL/PS_i it does not say how the work already assigned
counts; here a device's time for a new task is its profiled time stretched as in a
processor-sharing queue, 1 / (1 - load) with the task's own load included (continued
linearly past 95%), and a transfer's time divides each link's rate among the streams
already on it. Without that, every stream would go to the same fastest device until its
memory ran out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from testbed.kinds.video.problem import FRAME_BITS, Mapping, Problem, Stream

KNEE = 0.95  # processor-sharing stretch 1 / (1 - load) up to here, then its tangent


@dataclass
class _State:
    """What is assigned so far, as arrays over the devices (in `p.devices` order) so that a
    stream's cost on every device is a few array operations: 100 streams on 50 devices are
    decided in milliseconds."""

    p: Problem
    memory: np.ndarray  # bytes left per device
    cpu: np.ndarray  # CPU-seconds per second assigned to each device
    det_s: np.ndarray  # per device: one frame's detection
    crop_s: np.ndarray
    reid_s: np.ndarray  # one crop's re-ID
    call_s: np.ndarray  # one re-ID call beyond its crops
    cap: np.ndarray  # Mbit/s per link
    slow: np.ndarray  # seconds per Mbit on each link's share left (streams on it + 1), 0 at
    #                   the end (the padding of route matrices)
    on_link: np.ndarray  # streams already on each link
    detect: dict[str, str] = field(default_factory=dict)
    reid: dict[str, int] = field(default_factory=dict)
    instances: list[str] = field(default_factory=list)
    instance_at: list[int] = field(default_factory=list)  # their devices' positions

    @classmethod
    def start(cls, p: Problem) -> _State:
        devs = p.devices
        links = list(p.view.links)
        return cls(p, np.array([p.memory[d] for d in devs], dtype=float), np.zeros(len(devs)),
                   np.array([p.detect_s[d] for d in devs]),
                   np.array([p.crop_s.get(d, 0.0) for d in devs]),
                   np.array([p.reid_s[d] for d in devs]),
                   np.array([p.reid_call_s.get(d, 0.0) for d in devs]),
                   np.array([p.view.links[lk] for lk in links]),
                   np.array([1 / p.view.links[lk] for lk in links] + [0.0]),
                   np.zeros(len(links)))

    def index(self, device: str) -> int:
        return self.p.device_index[device]

    def transfer_all(self, nbytes: float, a: str) -> np.ndarray:
        """Problem.transfer_s from a to every device, each link's rate divided among the
        streams already on it."""
        if nbytes <= 0:
            return np.zeros(len(self.p.devices))
        per_mbit = self.slow[self.p.view.route_matrix(a, self.p.devices)]
        # the bytes at the slowest link's rate, one Ethernet frame at each other link's
        return ((nbytes * 8 - FRAME_BITS) / 1e6 * np.maximum.reduce(per_mbit)
                + FRAME_BITS / 1e6 * np.add.reduce(per_mbit))

    def detect_frame_all(self, s: Stream) -> np.ndarray:
        return self.det_s + s.crops_per_frame * self.crop_s

    def reid_frame_all(self, s: Stream) -> np.ndarray:
        c = s.crops_per_frame
        return self.reid_s * c + self.call_s * min(1.0, c)

    def stretched(self, seconds: np.ndarray, demand: np.ndarray) -> np.ndarray:
        load = self.cpu + demand
        if load.max() < KNEE:
            return seconds / (1 - load)
        below = seconds / np.maximum(1 - load, 1 - KNEE)
        past = seconds * (1 / (1 - KNEE) + (load - KNEE) / (1 - KNEE) ** 2)
        return np.where(load < KNEE, below, past)

    def carry(self, a: str, b: str) -> None:
        for n in self.p.view.link_routes(b)[a]:
            self.on_link[n] += 1
            self.slow[n] = (1 + self.on_link[n]) / self.cap[n]


def _heaviest_first(p: Problem) -> list[Stream]:
    det = sum(p.detect_s.values()) / len(p.detect_s)
    reid = sum(p.reid_s.values()) / len(p.reid_s)
    return sorted(p.streams, key=lambda s: (-s.fps * (det + s.crops_per_frame * reid), s.name))


def _best(cost: np.ndarray, fits: np.ndarray, p: Problem) -> str | None:
    """The device with the least cost among those that fit (the first one on ties)."""
    if not fits.any():
        return None
    return p.devices[int(np.argmin(np.where(fits, cost, np.inf)))]


# ---- stage 1: where a stream's frames go ------------------------------------------------------
def _map_random(st: _State, s: Stream, rng: random.Random) -> str | None:
    fits = [d for d, m in zip(st.p.devices, st.memory, strict=True) if m >= s.detect_memory]
    return rng.choice(fits) if fits else None


def _map_nearest(st: _State, s: Stream, rng: random.Random) -> str | None:
    return _best(st.transfer_all(s.frame_bytes, s.source), st.memory >= s.detect_memory, st.p)


def _map_fastest(st: _State, s: Stream, rng: random.Random) -> str | None:
    """Algorithm 7, stage 1: least frame transfer + detection time."""
    det = st.detect_frame_all(s)
    cost = st.transfer_all(s.frame_bytes, s.source) + st.stretched(det, s.fps * det)
    return _best(cost, st.memory >= s.detect_memory, st.p)


# ---- stage 2: which re-ID instance serves it --------------------------------------------------
def _reid_cost(st: _State, s: Stream, i: str) -> np.ndarray:
    """Per device j: the frame's crops from i to j and their re-ID there (eq. 5.9)."""
    reid = st.reid_frame_all(s)
    return (st.transfer_all(s.crops_per_frame * s.crop_bytes, i)
            + st.stretched(reid, s.fps * reid))


def _reid_local(st: _State, s: Stream, i: str) -> int | None:
    if st.memory[st.index(i)] >= s.reid_memory:
        return _deploy(st, i)
    if s.shared:
        mine = [n for n, d in enumerate(st.instances) if d == i]
        return mine[0] if mine else None
    return None


def _reid_offload(st: _State, s: Stream, i: str) -> int | None:
    """Algorithm 7, stage 2: a new instance on the device with the least crop transfer +
    re-ID time; when no device has memory for one, reuse a deployed instance (eq. 5.9)."""
    cost = _reid_cost(st, s, i)
    j = _best(cost, st.memory >= s.reid_memory, st.p)
    if j is not None:
        return _deploy(st, j)
    if s.shared and st.instances:
        return int(np.argmin(cost[st.instance_at]))
    return None


def _deploy(st: _State, device: str) -> int:
    st.instances.append(device)
    st.instance_at.append(st.index(device))
    return len(st.instances) - 1


MapFn = Callable[[_State, Stream, random.Random], "str | None"]
ReidFn = Callable[[_State, Stream, str], "int | None"]


def _two_stages(map_fn: MapFn, reid_fn: ReidFn) -> Callable[[Problem, int], Mapping]:
    def strategy(p: Problem, seed: int = 0) -> Mapping:
        rng = random.Random(seed)
        st = _State.start(p)
        mapped = []
        for s in _heaviest_first(p):  # stage 1
            i = map_fn(st, s, rng)
            if i is None:
                continue
            st.detect[s.name] = i
            st.memory[st.index(i)] -= s.detect_memory
            st.cpu[st.index(i)] += s.fps * p.detect_frame_s(s, i)
            st.carry(s.source, i)
            mapped.append(s)
        for s in mapped:  # stage 2
            i = st.detect[s.name]
            before = len(st.instances)
            n = reid_fn(st, s, i)
            if n is None:  # no re-ID anywhere: the stream cannot run; give back its detector
                del st.detect[s.name]
                st.memory[st.index(i)] += s.detect_memory
                st.cpu[st.index(i)] -= s.fps * p.detect_frame_s(s, i)
                continue
            j = st.instances[n]
            if len(st.instances) > before:
                st.memory[st.index(j)] -= s.reid_memory
            st.reid[s.name] = n
            st.cpu[st.index(j)] += s.fps * p.reid_frame_s(s, j)
            st.carry(i, j)
        used = sorted(set(st.reid.values()))
        renumber = {old: new for new, old in enumerate(used)}
        return Mapping(dict(st.detect), {k: renumber[n] for k, n in st.reid.items()},
                       tuple(st.instances[n] for n in used),
                       tuple(s.name for s in p.streams if s.name not in st.detect))
    return strategy


STRATEGIES: dict[str, tuple[Callable[[Problem, int], Mapping], str]] = {
    "jstsh": (_two_stages(_map_fastest, _reid_offload),
              "DCEI's JSTSH (thesis Alg. 7, 'WMWO'): streams to the device with least transfer "
              "+ detection time, re-ID placed or reused (eq. 5.9)"),
    "nmno": (_two_stages(_map_random, _reid_local),
             "no mapping, no offloading: random device per stream, re-ID on it (seeded)"),
    "wmno": (_two_stages(_map_nearest, _reid_local),
             "with mapping, no offloading: device with the shortest frame transfer, re-ID on it"),
    "nmwo": (_two_stages(_map_random, _reid_offload),
             "no mapping, with offloading: random device per stream (seeded), re-ID placed as "
             "JSTSH does"),
}


def decide(name: str, p: Problem, seed: int = 0) -> Mapping:
    return STRATEGIES[name][0](p, seed)
