"""A video decision as a Plan: per camera stream its detection placed on the mapped device and
its re-ID on the instance's device, one flow for its frames (camera -> detector) and one per
(detector device, instance) pair for crops, and the Plan's extension with the mapping, the
instances and eq. 5.2's predicted terms and frame rates.

Profiles come from the nodes in a run; offline (`testbed schedule`) the two models are
profiled once here on one core and scaled to each node's speed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import time
from dataclasses import dataclass, field, replace

from testbed.kinds.video.playback import play
from testbed.kinds.video.problem import Mapping, Problem, Stream, latency_s, predict_fps
from testbed.kinds.video.spec import Workload
from testbed.kinds.video.strategies import STRATEGIES, decide
from testbed.schedulers import register
from testbed.schedulers.network import NetworkView
from testbed.schedulers.plan import Flow, JobPrediction, Placement, Plan, register_extension
from testbed.topology.model import Topology

WARMUP_S = 2.0  # frames captured in a run's first seconds (models warming up) are not counted
FRAME_PORT_BASE = 7600  # stream k's frames reach its detector on FRAME_PORT_BASE + k
REID_PORT_BASE = 7800  # re-ID instance n listens on REID_PORT_BASE + n
BIN_S = 5.0  # frame rates over time (fps_over_time.csv) in bins of this many seconds


@dataclass(frozen=True)
class VideoDecision:
    strategy: str
    detect: dict[str, str]  # stream -> device (x_ik)
    reid: dict[str, int]  # stream -> instance (y_jk through the instance's device)
    instances: list[str]  # instance -> device
    not_placed: list[str]
    fps_predicted: dict[str, float]
    latency_predicted: dict[str, dict[str, float]]  # eq. 5.2's terms and total, seconds
    fps_bins: dict[str, list[float]] = field(default_factory=dict)  # per BIN_S from t = 0

    @classmethod
    def from_dict(cls, d: dict) -> VideoDecision:
        return cls(**d)


register_extension("video", VideoDecision)


@dataclass(frozen=True)
class Decidable:
    """What a video strategy decides on: the workload and its profiled problem."""

    workload: Workload
    problem: Problem
    seed: int = 0
    horizon_s: float = 30.0  # how long the cameras stream
    name: str = "video"
    arrival_s: float = 0.0


def fps_over_time(p: Problem, m: Mapping, w: Workload, t0: float, t1: float) -> dict[str, float]:
    """Each stream's frame rate averaged over [t0, t1]: the model evaluated on every stretch
    where no pedestrian count changes (a stream's re-ID work follows its trace)."""
    cuts = sorted({t0, t1, *(t for c in w.cameras for t, _ in c.pedestrians.points
                             if t0 < t < t1)})
    every = {c.name: c.spec.tasks.reid.every for c in w.cameras}
    peds = {c.name: c.pedestrians for c in w.cameras}
    total: dict[str, float] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        now = replace(p, streams=tuple(replace(s, crops_per_frame=round(peds[s.name].at(a))
                                               / every[s.name]) for s in p.streams))
        for name, fps in predict_fps(now, m).items():
            total[name] = total.get(name, 0.0) + fps * (b - a)
    return {name: v / (t1 - t0) for name, v in total.items()} if t1 > t0 else \
        predict_fps(p, m)


def _bins(horizon_s: float) -> list[tuple[float, float]]:
    """The BIN_S-long stretches of fps_over_time.csv, the last one cut at the horizon."""
    return [(k * BIN_S, min((k + 1) * BIN_S, horizon_s))
            for k in range(int(-(-horizon_s // BIN_S)))]


def _predicted(p: Problem, m: Mapping, w: Workload, horizon_s: float) -> tuple[dict, dict, dict]:
    """Frame rates over the measured window, eq. 5.2's latency terms, frame rates per bin."""
    fps = fps_over_time(p, m, w, min(WARMUP_S, horizon_s / 2), horizon_s)
    bins = [fps_over_time(p, m, w, a, b) for a, b in _bins(horizon_s)]
    return fps, latency_s(p, m), {name: [b[name] for b in bins] for name in fps}


def played_out(ext: VideoDecision, p: Problem, w: Workload, horizon_s: float) -> VideoDecision:
    """The same mapping and instances predicted on other step costs (a pilot's), played out
    with the edge worker's own rules (playback.py): on the step costs a run measured, that
    predicts its frame rates better than max-min shares (docs/results.md, DCEI fidelity).
    Latency stays eq. 5.2's terms, on the new costs."""
    m = Mapping(ext.detect, ext.reid, tuple(ext.instances), tuple(ext.not_placed))
    peds = {c.name: c.pedestrians for c in w.cameras}
    every = {c.name: c.spec.tasks.reid.every for c in w.cameras}
    fps = play(p, m, peds, every, min(WARMUP_S, horizon_s / 2), horizon_s)
    bins = [play(p, m, peds, every, a, b) for a, b in _bins(horizon_s)]
    return replace(ext, fps_predicted=fps, latency_predicted=latency_s(p, m),
                   fps_bins={name: [b[name] for b in bins] for name in fps})


def to_plan(strategy: str, unit: Decidable, m: Mapping, decision_s: float) -> Plan:
    p, w = unit.problem, unit.workload
    index = {c.name: k for k, c in enumerate(w.cameras)}
    fps, lat, bins = _predicted(p, m, w, unit.horizon_s)
    placements, flows, predicted, crop_pairs = [], [], {}, {}
    for s in p.streams:
        if s.name not in m.detect:
            continue
        i, n = m.detect[s.name], m.reid[s.name]
        j = m.instances[n]
        placements += [Placement(s.name, "camera", s.source, 0.0, 0),
                       Placement(s.name, "detect", i, 0.0, s.detect_memory, ("camera",)),
                       Placement(s.name, f"reid#{n}", j, 0.0, s.reid_memory, ("detect",))]
        flows.append(Flow(s.name, "", "detect", s.source, i, s.frame_bytes,
                          p.route(s.source, i), 0.0, FRAME_PORT_BASE + index[s.name]))
        if i != j:
            crop_pairs.setdefault((i, n), []).append(s)
        terms = lat[s.name]
        bottleneck = "camera" if fps[s.name] >= s.fps * (1 - 1e-6) else "device or link"
        predicted[s.name] = JobPrediction(fps[s.name], bottleneck, latency_s=terms["total_s"])
    for (i, n), streams in sorted(crop_pairs.items()):
        j = m.instances[n]
        volume = int(sum(s.crops_per_frame * s.crop_bytes for s in streams))
        flows.append(Flow(streams[0].name, "detect", f"reid#{n}", i, j, volume, p.route(i, j),
                          0.0, REID_PORT_BASE + n))
    ext = VideoDecision(strategy, dict(m.detect), dict(m.reid), list(m.instances),
                        list(m.not_placed), fps, lat, bins)
    return Plan(strategy, tuple(placements), tuple(flows), predicted, tuple(m.not_placed),
                decision_s, kind="video", extension=ext)


def _strategy(name: str):
    """The registered scheduler: a pure function of the profiled problem (and a seed)."""
    def scheduler(view: NetworkView, plan: Plan, waiting: list, now: float) -> Plan:
        unit = waiting[0]
        t0 = time.perf_counter()
        m = decide(name, unit.problem, unit.seed)
        return to_plan(name, unit, m, time.perf_counter() - t0)
    scheduler.__doc__ = STRATEGIES[name][1]
    return scheduler


for _name, (_fn, _summary) in STRATEGIES.items():
    register(_name, _strategy(_name), _summary, kind="video")


def reid_costs(profile: dict) -> tuple[float, float]:
    """(seconds per crop, seconds per call) from a profile's calls of 1 and of `batch` crops."""
    per_crop = max(0.0, (profile["reid_batch_s"] - profile["reid1_s"]) / (profile["batch"] - 1))
    return per_crop, max(0.0, profile["reid1_s"] - per_crop)


def build(w: Workload, view: NetworkView, profiles: dict[str, dict],
          frame_bytes: dict[str, float], horizon_s: float,
          capture_s: dict[str, float] | None = None) -> Problem:
    """The problem of a workload: `frame_bytes` by camera name, `profiles` by device (what
    the program's profile role reports), `capture_s` by camera name (seconds its node takes
    to render and encode one frame; none: free)."""
    streams = []
    for c in w.cameras:
        r = c.spec.tasks.reid
        streams.append(Stream(
            c.name, c.spec.source, c.spec.frames.fps, int(frame_bytes[c.name]),
            c.pedestrians.mean(0.0, horizon_s) / r.every, r.crop_bytes,
            c.spec.tasks.detect.memory * 1_000_000, r.memory * 1_000_000, r.shared))
    memory = {d: view.nodes[d].memory_bytes for d in w.devices}
    reid = {d: reid_costs(profiles[d]) for d in w.devices}
    return Problem(tuple(streams), w.devices, {d: profiles[d]["detect_s"] for d in w.devices},
                   {d: reid[d][0] for d in w.devices}, memory, view,
                   {d: profiles[d]["crop_s"] for d in w.devices},
                   {d: reid[d][1] for d in w.devices}, dict(capture_s or {}))


def frame_key(c) -> str:
    w, h = c.spec.frames.size
    return f"{w}x{h}q{c.spec.frames.quality}"


def profile_config(w: Workload) -> dict:
    """What the workload's profile role measures: the detector input and every frame size."""
    keys = {frame_key(c): [*c.spec.frames.size, c.spec.frames.quality] for c in w.cameras}
    return {"input": w.cameras[0].spec.tasks.detect.input, "frames": list(keys.values())}


@functools.lru_cache(maxsize=8)
def profile_here(cfg_json: str) -> dict:
    import torch

    from testbed.experiment.profile import ROOT

    sys.path.insert(0, str(ROOT / "workloads"))
    import video_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return video_pipeline.profile({**json.loads(cfg_json), "budget_s": 1.0})[0]
    finally:
        torch.set_num_threads(threads)


def scaled(profile: dict, factor: float) -> dict:
    """A profile's times multiplied by `factor` (a node `factor` times slower)."""
    return {k: v * factor if k.endswith("_s") else v for k, v in profile.items()}


def schedule_offline(topo: Topology, w: Workload, strategy: str,
                     gops_per_core: float | None = None, seed: int = 0) -> Plan:
    from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE

    gops = gops_per_core or DEFAULT_GOPS_PER_CORE
    view = NetworkView.from_topology(topo, gops_per_core=gops)
    here = profile_here(json.dumps(profile_config(w), sort_keys=True))
    problem = build(w, view, {d: scaled(here, gops / view.nodes[d].speed_gops)
                              for d in w.devices},
                    {c.name: here["frame_bytes"][frame_key(c)] for c in w.cameras},
                    w.spec.duration)
    unit = Decidable(w, problem, seed or w.spec.seed, w.spec.duration)
    t0 = time.perf_counter()
    m = decide(strategy, problem, unit.seed)
    return to_plan(strategy, unit, m, time.perf_counter() - t0)
