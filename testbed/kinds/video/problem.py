"""The joint stream-mapping and re-identification problem (thesis section 5.4.3) with the
numbers a decision needs: per stream its frame rate and sizes, per device its measured
seconds per frame (detection) and per crop (re-identification) and its memory, per pair of
nodes the goodput of the route between them.

Costs follow eq. 5.2 for one frame of stream k detected on device i and re-identified on j:
    T_ik (frame transfer) + CL1/PS_i (detection, cutting the crops) + CL2/PS_j (one re-ID
    call on the frame's crops) + D12/R_ij (crops to j, when j != i),
with CL/PS as seconds profiled on each device at its CPU quota.
Throughput (frames per second per stream) is predicted by max-min fair filling: every stream's
frame rate rises in proportion to its camera's until a device's CPU or a link is full; the
streams using it stop there and the others go on (how CFS and TCP share when all are busy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from testbed.schedulers.network import NetworkView, path_links

FRAME_BITS = 1514 * 8  # one Ethernet frame: what each extra hop adds to a pipelined transfer


@dataclass(frozen=True)
class Stream:
    name: str
    source: str
    fps: float  # the camera's
    frame_bytes: int  # one encoded frame
    crops_per_frame: float  # mean over the run
    crop_bytes: int
    detect_memory: int  # bytes one loaded model takes (eq. 5.4)
    reid_memory: int
    shared: bool  # its re-ID may be served by an instance deployed for another stream


@dataclass(frozen=True)
class Problem:
    streams: tuple[Stream, ...]
    devices: tuple[str, ...]
    detect_s: dict[str, float]  # one frame through the detector on the device
    reid_s: dict[str, float]  # one crop through the re-ID model
    memory: dict[str, int]  # bytes
    view: NetworkView = field(repr=False)
    crop_s: dict[str, float] = field(default_factory=dict)  # cutting one crop at the detector
    reid_call_s: dict[str, float] = field(default_factory=dict)  # per re-ID call, beyond crops
    # stream -> seconds its camera node takes to render and encode one frame (its CPU is a
    # resource like a device's; a stream without an entry is captured for free)
    capture_s: dict[str, float] = field(default_factory=dict)

    @cached_property
    def device_index(self) -> dict[str, int]:
        """Each device's position in `devices`."""
        return {d: n for n, d in enumerate(self.devices)}

    def reid_frame_s(self, s: Stream, j: str) -> float:
        """CPU seconds of one frame's re-ID on j: its crops, and one call per frame that has
        any (a frame with c < 1 crops on average has them in a fraction c of frames)."""
        c = s.crops_per_frame
        return self.reid_s[j] * c + self.reid_call_s.get(j, 0.0) * min(1.0, c)

    def detect_frame_s(self, s: Stream, i: str) -> float:
        """CPU seconds of one frame at its detector: detection and cutting its crops."""
        return self.detect_s[i] + s.crops_per_frame * self.crop_s.get(i, 0.0)

    def route(self, a: str, b: str) -> tuple[str, ...]:
        return self.view.shortest_path(a, b)

    def transfer_s(self, nbytes: float, a: str, b: str, share: dict | None = None) -> float:
        """Store-and-forward pipelined: the bytes at the bottleneck's rate plus one frame per
        other hop. `share` (link -> streams already on it) divides each link's rate."""
        if a == b or nbytes <= 0:
            return 0.0
        rates = [self.view.links[lk] / (1 + (share or {}).get(lk, 0))
                 for lk in path_links(self.route(a, b))]
        slowest = min(rates)
        return (nbytes * 8 / slowest + sum(FRAME_BITS / r for r in rates)
                - FRAME_BITS / slowest) / 1e6


@dataclass(frozen=True)
class Mapping:
    """A decision: where each stream's detection runs (x_ik), which re-ID instance serves it
    (y_jk; instance n runs on instances[n]), and the streams that did not fit in memory."""

    detect: dict[str, str]
    reid: dict[str, int]
    instances: tuple[str, ...]
    not_placed: tuple[str, ...] = ()


def frame_terms(p: Problem, s: Stream, i: str, j: str) -> dict[str, float]:
    """Eq. 5.2's four terms (seconds) for one frame of `s`, detected on i, re-identified on j."""
    return {"transfer_s": p.transfer_s(s.frame_bytes, s.source, i),
            "detect_s": p.detect_frame_s(s, i),
            "reid_s": p.reid_frame_s(s, j),
            "offload_s": p.transfer_s(s.crops_per_frame * s.crop_bytes, i, j)}


def predict_fps(p: Problem, m: Mapping) -> dict[str, float]:
    """Frames per second each placed stream gets (max-min fair in the share of its camera's
    rate), with one CPU-second per second per device and per camera node (profiled at the
    node's quota) and each link's goodput as the resources."""
    names = [s.name for s in p.streams if s.name in m.detect]
    by = {s.name: s for s in p.streams}
    use: dict[str, dict[object, float]] = {}  # stream -> resource -> use at its camera's fps
    for n in names:
        s, i, j = by[n], m.detect[n], m.instances[m.reid[n]]
        u = {("cpu", i): s.fps * p.detect_frame_s(s, i)}
        u[("cpu", j)] = u.get(("cpu", j), 0.0) + s.fps * p.reid_frame_s(s, j)
        if p.capture_s.get(n):
            u[("cpu", s.source)] = u.get(("cpu", s.source), 0.0) + s.fps * p.capture_s[n]
        for a, b, nbytes in ((s.source, i, s.frame_bytes), (i, j, s.crops_per_frame *
                                                              s.crop_bytes)):
            if a != b and nbytes > 0:
                for lk in path_links(p.route(a, b)):
                    u[lk] = u.get(lk, 0.0) + s.fps * nbytes * 8 / 1e6
        use[n] = u
    cap = {r: 1.0 if isinstance(r, tuple) and r[0] == "cpu" else p.view.links[r]
           for u in use.values() for r in u}
    share = {n: 0.0 for n in names}
    free = set(names)
    while free:
        step = 1.0 - max(share[n] for n in free) if free else 0.0
        for r, c in cap.items():
            rising = sum(use[n].get(r, 0.0) for n in free)
            if rising > 0:
                left = c - sum(use[n].get(r, 0.0) * share[n] for n in names)
                step = min(step, max(left, 0.0) / rising)
        for n in free:
            share[n] += step
        full = {r for r, c in cap.items()
                if sum(use[n].get(r, 0.0) * share[n] for n in names) >= c * (1 - 1e-9)}
        done = {n for n in free if share[n] >= 1 - 1e-9
                or any(r in full and x > 0 for r, x in use[n].items())}
        if not done:
            break
        free -= done
    return {n: share[n] * by[n].fps for n in names}


def latency_s(p: Problem, m: Mapping) -> dict[str, dict[str, float]]:
    """Eq. 5.2 per placed stream: its four terms and their sum (no queueing)."""
    out = {}
    for s in p.streams:
        if s.name in m.detect:
            terms = frame_terms(p, s, m.detect[s.name], m.instances[m.reid[s.name]])
            out[s.name] = {**terms, "total_s": sum(terms.values())}
    return out
