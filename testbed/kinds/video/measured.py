"""Step costs as a run measured them, to price a decision on what its steps really cost.

A device's solo profile (one model in a loop) says what a step costs alone. In the run the
same device alternates models, frames and threads while the machine's other devices, cameras
and switches are busy too, and its steps cost 0.75-1.3x that (docs/results.md, DCEI
fidelity). The pilot (the plan run for a few seconds before the measured window) and
bench/dcei_replay.py both read the costs back from the edge workers' records with this.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from testbed.kinds.video.problem import Mapping, Problem


def measured_costs(p: Problem, m: Mapping, frames: list[dict], batches: list[dict],
                   warmup_s: float = 0.0) -> Problem:
    """`p` with each device's detection time the median of its frames' (records of the edge
    worker: t_detect_start, t_detect_end, stream) and its re-ID costs (per call and per crop)
    scaled by the median of measured / profiled time over its batches (instance, t_start,
    t_end, crops). One factor per device, not a fit of both terms: a pilot has a few batches,
    mostly of one size. A device's records in its first `warmup_s` (from its first step, on
    its own clock: a board's clock may differ) are left out; a device with none keeps its
    profile."""
    steps: dict[str, list[tuple[float, str, float]]] = {}  # device -> (start, what, value)
    for f in frames:
        if f["stream"] in m.detect:
            steps.setdefault(m.detect[f["stream"]], []).append(
                (f["t_detect_start"], "detect", f["t_detect_end"] - f["t_detect_start"]))
    for b in batches:
        device = m.instances[int(b["instance"])]
        profiled = p.reid_call_s.get(device, 0.0) + int(b["crops"]) * p.reid_s[device]
        if profiled > 0:
            steps.setdefault(device, []).append(
                (b["t_start"], "reid", (b["t_end"] - b["t_start"]) / profiled))
    detect, scale = dict(p.detect_s), {}
    for device, rows in steps.items():
        since = min(t for t, _, _ in rows) + warmup_s
        for what in ("detect", "reid"):
            kept = [v for t, w, v in rows if w == what and t >= since]
            if kept and what == "detect":
                detect[device] = statistics.median(kept)
            elif kept:
                scale[device] = statistics.median(kept)
    return replace(p, detect_s=detect,
                   reid_s={d: c * scale.get(d, 1.0) for d, c in p.reid_s.items()},
                   reid_call_s={d: c * scale.get(d, 1.0) for d, c in p.reid_call_s.items()})


def costs_table(p: Problem) -> dict[str, dict[str, float]]:
    """Per device the three step costs the model uses, for run.json."""
    return {d: {"detect_s": p.detect_s[d], "reid_crop_s": p.reid_s[d],
                "reid_call_s": p.reid_call_s.get(d, 0.0)} for d in p.devices}
