"""A video decision played out in time, the way workloads/video_pipeline.py runs it, to
predict each stream's frame rate with the executor's own rules instead of eq. 5.2's fluid
shares.

Max-min fairness (problem.predict_fps) treats a device's CPU as divisible at will. The edge
worker is not: it takes turns (one frame of each detector that has one, then one batch of
each re-ID instance with crops waiting, then again), a detector keeps only the newest frame
(frames that arrive while the worker is busy elsewhere are skipped), at most `window`
frames of a stream wait for re-ID, an instance batches up to BATCH_MAX crops from every
stream it serves, and a camera misses ticks while it is still rendering. Every step costs
what the node's profile says; transfers run at the route's rate shared by the transfers on
its links at the moment they start. No parameter is fitted: the numbers are the profiles,
the rules are the program's.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from testbed.kinds.video.problem import Mapping, Problem
from testbed.schedulers.network import path_links

BATCH_MAX = 4  # crops a re-ID instance takes at once (workloads/video_pipeline.py)
WINDOW = 2  # frames of a stream waiting for re-ID at once (the edge config's default)


@dataclass
class _Frame:
    stream: str
    t_capture: float  # since the cameras started: when the frame was rendered and encoded
    pedestrians: int
    crops: int = 0
    done: float | None = None


@dataclass
class _Detector:
    stream: str
    every: int
    instance: int
    latest: _Frame | None = None
    outstanding: int = 0
    due: float = 0.0

    def ready(self) -> bool:
        return self.latest is not None and self.outstanding < WINDOW


@dataclass
class _Instance:
    number: int
    inbox: list[_Frame] = field(default_factory=list)

    def ready(self) -> bool:
        return bool(self.inbox)


@dataclass
class _Worker:
    """One device's edge process: its hosts in the program's order, where it is in a pass."""

    device: str
    hosts: list
    busy: bool = False
    position: int = 0
    did: bool = False


def play(p: Problem, m: Mapping, pedestrians: dict, every: dict[str, int], t0: float,
         t1: float) -> dict[str, float]:
    """Frames per second each placed stream completes in [t0, t1) (re-ID included, as the
    executor counts them); `pedestrians` maps a stream to its count trace (`.at(t)`)."""
    by = {s.name: s for s in p.streams}
    names = [s.name for s in p.streams if s.name in m.detect]
    detectors = {n: _Detector(n, max(1, every.get(n, 1)), m.reid[n]) for n in names}
    instances = {k: _Instance(k) for k in range(len(m.instances))}
    workers = {}
    for d in sorted({*m.detect.values(), *m.instances}):
        hosts = [detectors[n] for n in m.detect if m.detect[n] == d and n in detectors]
        hosts += [instances[k] for k, at in enumerate(m.instances) if at == d]
        workers[d] = _Worker(d, hosts)
    events: list = []
    order = itertools.count()
    active: dict = {}  # link -> transfers on it now

    def at(t: float, what: str, *args) -> None:
        heapq.heappush(events, (t, next(order), what, args))

    def transfer(now: float, nbytes: float, a: str, b: str, what: str, *args) -> None:
        links = path_links(p.route(a, b)) if a != b else []
        spent = p.transfer_s(nbytes, a, b, {lk: active.get(lk, 0) for lk in links})
        for lk in links:
            active[lk] = active.get(lk, 0) + 1
        at(now + spent, "arrived", links, what, *args)

    sending: dict[str, bool] = dict.fromkeys(names, False)
    newest: dict[str, _Frame | None] = dict.fromkeys(names)
    frames: list[_Frame] = []

    def send_next(now: float, n: str) -> None:
        if newest[n] is None or sending[n]:
            return
        f, newest[n] = newest[n], None
        sending[n] = True
        transfer(now, by[n].frame_bytes, by[n].source, m.detect[n], "frame", f)

    def wake(now: float, w: _Worker) -> None:
        """The worker goes on with its pass: the next host that is ready takes a step."""
        if w.busy:
            return
        while True:
            while w.position < len(w.hosts) and not w.hosts[w.position].ready():
                w.position += 1
            if w.position < len(w.hosts):
                h = w.hosts[w.position]
                w.position += 1
                w.did, w.busy = True, True
                at(now + step(now, w, h), "stepped", w)
                return
            w.position = 0  # a pass ended: another if it did anything, else wait for work
            if not w.did:
                return
            w.did = False

    def step(now: float, w: _Worker, h) -> float:
        d = w.device
        if isinstance(h, _Detector):
            f, h.latest = h.latest, None
            h.due += f.pedestrians / h.every
            f.crops = int(h.due)
            h.due -= f.crops
            cost = p.detect_s[d] + f.crops * p.crop_s.get(d, 0.0)
            if f.crops:
                h.outstanding += 1
                at(now + cost, "crops", f, h)
            else:
                f.done = now + cost
            return cost
        batch, n = [], 0
        while h.inbox and (not batch or n + h.inbox[0].crops <= BATCH_MAX):
            batch.append(h.inbox.pop(0))
            n += batch[-1].crops
        cost = p.reid_call_s.get(d, 0.0) + n * p.reid_s[d]
        at(now + cost, "answered", batch)
        return cost

    for n in names:
        at(0.0, "tick", n, 0)
    while events:
        now, _, what, args = heapq.heappop(events)
        if now >= t1 + 30.0:  # the executor's drain: later answers never count anyway
            break
        if what == "tick":  # the camera renders frame `k`
            n, k = args
            fps = by[n].fps
            if k / fps >= t1:
                continue
            done = now + p.capture_s.get(n, 0.0)
            f = _Frame(n, done, int(round(pedestrians[n].at(now))))
            frames.append(f)
            at(done, "captured", f)
            nxt = max(k + 1, int(done * fps) + 1)
            at(max(done, nxt / fps), "tick", n, nxt)
        elif what == "captured":
            f = args[0]
            newest[f.stream] = f
            send_next(now, f.stream)
        elif what == "arrived":
            links, kind, *rest = args
            for lk in links:
                active[lk] -= 1
            if kind == "frame":
                f = rest[0]
                sending[f.stream] = False
                detectors[f.stream].latest = f
                send_next(now, f.stream)
                wake(now, workers[m.detect[f.stream]])
            else:  # crops reached their instance
                f = rest[0]
                inst = instances[detectors[f.stream].instance]
                inst.inbox.append(f)
                wake(now, workers[m.instances[inst.number]])
        elif what == "stepped":
            w = args[0]
            w.busy = False
            wake(now, w)
        elif what == "crops":
            f, h = args
            transfer(now, f.crops * by[f.stream].crop_bytes, m.detect[f.stream],
                     m.instances[h.instance], "crops", f)
        elif what == "answered":
            for f in args[0]:
                f.done = now
                det = detectors[f.stream]
                det.outstanding -= 1
                wake(now, workers[m.detect[f.stream]])
    # the executor's clock for a stream starts at its first frame's capture stamp
    first = {}
    for f in frames:
        first.setdefault(f.stream, f.t_capture)
    span = t1 - t0
    out = dict.fromkeys(names, 0.0)
    for f in frames:
        if f.done is not None and t0 <= f.done - first[f.stream] < t1:
            out[f.stream] += 1 / span
    return out
