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

from testbed.kinds.video.problem import Mapping, Problem, Stream
from testbed.schedulers.network import path_links

KNEE = 0.95  # processor-sharing stretch 1 / (1 - load) up to here, then its tangent


@dataclass
class _State:
    p: Problem
    memory: dict[str, int]
    cpu: dict[str, float]  # CPU-seconds per second assigned to each device
    flows: dict[tuple[str, str], int] = field(default_factory=dict)  # streams per link
    detect: dict[str, str] = field(default_factory=dict)
    reid: dict[str, int] = field(default_factory=dict)
    instances: list[str] = field(default_factory=list)

    def shared_transfer_s(self, nbytes: float, a: str, b: str) -> float:
        return self.p.transfer_s(nbytes, a, b, self.flows)

    def stretched(self, device: str, seconds: float, demand: float) -> float:
        load = self.cpu[device] + demand
        if load < KNEE:
            return seconds / (1 - load)
        return seconds * (1 / (1 - KNEE) + (load - KNEE) / (1 - KNEE) ** 2)

    def carry(self, a: str, b: str) -> None:
        if a != b:
            for lk in path_links(self.p.route(a, b)):
                self.flows[lk] = self.flows.get(lk, 0) + 1


def _heaviest_first(p: Problem) -> list[Stream]:
    det = sum(p.detect_s.values()) / len(p.detect_s)
    reid = sum(p.reid_s.values()) / len(p.reid_s)
    return sorted(p.streams, key=lambda s: (-s.fps * (det + s.crops_per_frame * reid), s.name))


# ---- stage 1: where a stream's frames go ------------------------------------------------------
def _map_random(st: _State, s: Stream, rng: random.Random) -> str | None:
    fits = [d for d in st.p.devices if st.memory[d] >= s.detect_memory]
    return rng.choice(fits) if fits else None


def _map_nearest(st: _State, s: Stream, rng: random.Random) -> str | None:
    fits = [d for d in st.p.devices if st.memory[d] >= s.detect_memory]
    return min(fits, key=lambda d: st.shared_transfer_s(s.frame_bytes, s.source, d),
               default=None)


def _map_fastest(st: _State, s: Stream, rng: random.Random) -> str | None:
    """Algorithm 7, stage 1: least frame transfer + detection time."""
    fits = [d for d in st.p.devices if st.memory[d] >= s.detect_memory]
    return min(fits, key=lambda d: st.shared_transfer_s(s.frame_bytes, s.source, d)
               + st.stretched(d, st.p.detect_frame_s(s, d), s.fps * st.p.detect_frame_s(s, d)),
               default=None)


# ---- stage 2: which re-ID instance serves it --------------------------------------------------
def _reid_cost(st: _State, s: Stream, i: str, j: str) -> float:
    crops = s.crops_per_frame
    return (st.shared_transfer_s(crops * s.crop_bytes, i, j)
            + st.stretched(j, st.p.reid_frame_s(s, j), s.fps * st.p.reid_frame_s(s, j)))


def _reid_local(st: _State, s: Stream, i: str) -> int | None:
    if st.memory[i] >= s.reid_memory:
        return _deploy(st, i)
    if s.shared:
        mine = [n for n, d in enumerate(st.instances) if d == i]
        return mine[0] if mine else None
    return None


def _reid_offload(st: _State, s: Stream, i: str) -> int | None:
    """Algorithm 7, stage 2: a new instance on the device with the least crop transfer +
    re-ID time; when no device has memory for one, reuse a deployed instance (eq. 5.9)."""
    fits = [d for d in st.p.devices if st.memory[d] >= s.reid_memory]
    if fits:
        return _deploy(st, min(fits, key=lambda j: _reid_cost(st, s, i, j)))
    if s.shared and st.instances:
        return min(range(len(st.instances)),
                   key=lambda n: _reid_cost(st, s, i, st.instances[n]))
    return None


def _deploy(st: _State, device: str) -> int:
    st.instances.append(device)
    return len(st.instances) - 1


MapFn = Callable[[_State, Stream, random.Random], "str | None"]
ReidFn = Callable[[_State, Stream, str], "int | None"]


def _two_stages(map_fn: MapFn, reid_fn: ReidFn) -> Callable[[Problem, int], Mapping]:
    def strategy(p: Problem, seed: int = 0) -> Mapping:
        rng = random.Random(seed)
        st = _State(p, dict(p.memory), {d: 0.0 for d in p.devices})
        order = _heaviest_first(p)
        mapped = []
        for s in order:  # stage 1
            i = map_fn(st, s, rng)
            if i is None:
                continue
            st.detect[s.name] = i
            st.memory[i] -= s.detect_memory
            st.cpu[i] += s.fps * p.detect_frame_s(s, i)
            st.carry(s.source, i)
            mapped.append(s)
        for s in mapped:  # stage 2
            i = st.detect[s.name]
            before = len(st.instances)
            n = reid_fn(st, s, i)
            if n is None:  # no re-ID anywhere: the stream cannot run; give back its detector
                del st.detect[s.name]
                st.memory[i] += s.detect_memory
                st.cpu[i] -= s.fps * p.detect_frame_s(s, i)
                continue
            j = st.instances[n]
            if len(st.instances) > before:
                st.memory[j] -= s.reid_memory
            st.reid[s.name] = n
            st.cpu[j] += s.fps * p.reid_frame_s(s, j)
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
