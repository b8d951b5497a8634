"""Video analytics files (DCEI, thesis ch. 5; a user-facing contract):

    kind: video
    devices: [e1, e2, e3]        # edge devices that may run models; "*": every non-camera node
    duration: 30s                # how long the cameras stream (the measured run)
    pilot: 20s                   # the plan runs this long first to measure its step costs; 0: off
    jobs:
      - name: cam1
        source: cam1             # a camera node: it only sends frames
        frames: {fps: 5, resolution: 360p, codec: jpeg, quality: 80}   # seeded synthetic scene
        pedestrians: {trace: traces/cam1.csv}   # t_s,count; or a constant: `pedestrians: 3`
        tasks:
          detect: {model: ssdlite_mobilenet, memory: 200MB}             # every frame
          reid: {model: osnet_like, memory: 300MB, after: {detect: per_pedestrian(20kB)},
                 shared: true, every: 5}  # each tracked pedestrian re-identified every 5th frame

A pedestrian count stands in for what a detector with trained weights would find: the
models run for real on real decoded frames but with random weights (no weights may be
downloaded here), so the number of crops sent to re-identification comes from the file.

The pilot: before the measured run the cameras stream for `pilot` seconds to the devices
the decision chose, and the step costs the devices measure meanwhile (detection per frame,
re-ID per batch) price the prediction the run reports beside what it measures; what the
scheduler predicted on the solo profiles stays beside both (jobs.csv `fps_decided`).

`memory:` is what the schedulers reserve for one loaded model on a device (eq. 5.4), against
the device's `memory:` in the topology.
"""

from __future__ import annotations

import bisect
import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from testbed.errors import InputError
from testbed.topology.loader import parse_model, read_yaml
from testbed.topology.model import Topology
from testbed.topology.schema import MemoryMB, Seconds, Strict
from testbed.units import parse_size_bytes

RESOLUTIONS = {"240p": (426, 240), "360p": (640, 360), "480p": (854, 480), "720p": (1280, 720),
               "1080p": (1920, 1080)}
DETECTORS = ("ssdlite_mobilenet",)
REID_MODELS = ("osnet_like",)
_PER_PEDESTRIAN = re.compile(r"^per_pedestrian\((.+)\)$")


class FramesSpec(Strict):
    fps: float = Field(5.0, gt=0, le=60)
    resolution: str = "360p"
    codec: Literal["jpeg"] = "jpeg"
    quality: int = Field(80, ge=10, le=95)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: str) -> str:
        if v not in RESOLUTIONS and not re.fullmatch(r"\d{2,4}x\d{2,4}", v):
            raise ValueError(f"{v!r} is not a resolution; write one of {', '.join(RESOLUTIONS)} "
                             "or WIDTHxHEIGHT such as 320x240")
        return v

    @property
    def size(self) -> tuple[int, int]:
        if self.resolution in RESOLUTIONS:
            return RESOLUTIONS[self.resolution]
        w, h = self.resolution.split("x")
        return int(w), int(h)


class TraceSpec(Strict):
    trace: str | None = Field(None, description="CSV file with columns t_s,count (relative "
                              "to the job file)")
    points: list[tuple[float, float]] | None = Field(None, description="[t_s, count] pairs")


class DetectSpec(Strict):
    model: Literal["ssdlite_mobilenet"] = "ssdlite_mobilenet"
    memory: MemoryMB = 200
    input: int = Field(224, ge=64, le=640, description="detector input side, pixels")


class ReidSpec(Strict):
    model: Literal["osnet_like"] = "osnet_like"
    memory: MemoryMB = 300
    after: dict[str, str] = Field(default_factory=lambda: {"detect": "per_pedestrian(20kB)"})
    shared: bool = True
    every: int = Field(1, ge=1, le=10_000, description="a tracked pedestrian is re-identified "
                       "once every this many frames")

    @field_validator("after")
    @classmethod
    def _after(cls, v: dict[str, str]) -> dict[str, str]:
        if list(v) != ["detect"]:
            raise ValueError("reid comes after detect only; write after: {detect: "
                             "per_pedestrian(20kB)}")
        m = _PER_PEDESTRIAN.match(str(v["detect"]).replace(" ", ""))
        if not m:
            raise ValueError(f"{v['detect']!r}: write per_pedestrian(SIZE), e.g. "
                             "per_pedestrian(20kB)")
        parse_size_bytes(m.group(1))
        return v

    @property
    def crop_bytes(self) -> int:
        return parse_size_bytes(_PER_PEDESTRIAN.match(self.after["detect"].replace(" ", ""))
                                .group(1))


class TasksSpec(Strict):
    detect: DetectSpec = DetectSpec()
    reid: ReidSpec = ReidSpec()


class CameraJob(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    source: str
    frames: FramesSpec = FramesSpec()
    pedestrians: float | TraceSpec = 2.0
    tasks: TasksSpec = TasksSpec()


class VideoFile(Strict):
    kind: Literal["video"]
    devices: Literal["*"] | list[str] = "*"
    duration: Seconds = 30.0
    pilot: Seconds = Field(20.0, ge=0)  # a 10-s pilot missed by 1.6x as much (results.md)
    seed: int = 0
    jobs: list[CameraJob] = Field(min_length=1)


@dataclass(frozen=True)
class Pedestrians:
    """People in view over time: a step function from (t_s, count) points."""

    points: tuple[tuple[float, float], ...]

    def at(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t) - 1
        return self.points[max(i, 0)][1]

    def mean(self, t0: float, t1: float) -> float:
        """Mean count over [t0, t1] (the step function's time average)."""
        if t1 <= t0:
            return self.at(t0)
        cuts = [t0, *(t for t, _ in self.points if t0 < t < t1), t1]
        return sum(self.at(a) * (b - a) for a, b in zip(cuts, cuts[1:], strict=False)) / (t1 - t0)


@dataclass(frozen=True)
class Camera:
    """A checked camera job on a topology: the unit of work the video schedulers map."""

    spec: CameraJob
    pedestrians: Pedestrians

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Workload:
    spec: VideoFile
    cameras: tuple[Camera, ...]
    devices: tuple[str, ...]
    source: str
    name: str = "video"
    arrival_s: float = 0.0


def with_timeline_counts(w: Workload, counts: list[tuple[float, str, float, int]],
                         source: str) -> Workload:
    """The workload with pedestrian counts from a timeline (file `source`): each
    (t_s, camera node, count, event index) holds for every stream from that camera until the
    next; the job's own constant `pedestrians:` is the count before the first."""
    sources = {c.spec.source for c in w.cameras}
    for _, node, _, ev in counts:
        if node not in sources:
            raise InputError(f"{source}: timeline.events[{ev}].node: {node} is no camera of "
                             f"{w.source}; fix: use one of {', '.join(sorted(sources))}")
    cameras = []
    for i, c in enumerate(w.cameras):
        mine = [(t, n) for t, node, n, _ in counts if node == c.spec.source]
        if mine and not isinstance(c.spec.pedestrians, (int, float)):
            raise InputError(f"{w.source}: jobs[{i}] ({c.name}).pedestrians: a trace, and "
                             f"{source}'s timeline sets the counts of {c.spec.source} too; "
                             "fix: keep one of them (a constant here is the count before the "
                             "timeline's first)")
        if mine:
            points = {0.0: float(c.spec.pedestrians), **{t: float(n) for t, n in mine}}
            c = replace(c, pedestrians=Pedestrians(tuple(sorted(points.items()))))
        cameras.append(c)
    return replace(w, cameras=tuple(cameras))


def _trace(path: Path, where: str) -> Pedestrians:
    if not path.exists():
        raise InputError(f"{where}: trace file {path} does not exist; fix: give a CSV with "
                         "columns t_s,count, or a constant count")
    points = []
    with path.open() as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or {"t_s", "count"} - set(rows.fieldnames):
            raise InputError(f"{path}: needs the columns t_s,count (found "
                             f"{rows.fieldnames}); fix the header")
        for n, row in enumerate(rows, start=2):
            try:
                t, c = float(row["t_s"]), float(row["count"])
            except (TypeError, ValueError):
                raise InputError(f"{path}:{n}: t_s and count must be numbers") from None
            if c < 0 or (points and t <= points[-1][0]):
                raise InputError(f"{path}:{n}: counts are >= 0 and times increase")
            points.append((t, c))
    if not points:
        raise InputError(f"{path}: no rows; fix: add t_s,count rows")
    return Pedestrians(tuple(points))


def loads(text: str, source: str, topo: Topology) -> Workload:
    spec = parse_model(VideoFile, read_yaml(text, source), source)
    names = [n.name for n in topo.nodes]
    here = Path(source).parent
    cameras, seen = [], set()
    for i, job in enumerate(spec.jobs):
        where = f"{source}: jobs[{i}] ({job.name})"
        if job.name in seen:
            raise InputError(f"{where}: name used twice; fix: give every job its own name")
        seen.add(job.name)
        if job.source not in names:
            raise InputError(f"{where}: source: {job.source!r} is not a node of {topo.name}; "
                             f"fix: use one of {', '.join(names)}")
        peds = job.pedestrians
        if isinstance(peds, TraceSpec) and peds.trace is not None:
            p = Path(peds.trace)
            ped = _trace(p if p.is_absolute() else here / p, where)
        elif isinstance(peds, TraceSpec):
            pts = peds.points or []
            if not pts or any(c < 0 for _, c in pts) or any(
                    b[0] <= a[0] for a, b in zip(pts, pts[1:], strict=False)):
                raise InputError(f"{where}: pedestrians: points must be [t_s, count] pairs, "
                                 "counts >= 0, times increasing; or give trace: FILE.csv")
            ped = Pedestrians(tuple((float(t), float(c)) for t, c in pts))
        else:
            if peds < 0:
                raise InputError(f"{where}: pedestrians: {peds} must be >= 0")
            ped = Pedestrians(((0.0, float(peds)),))
        cameras.append(Camera(job, ped))
    sources = {c.spec.source for c in cameras}
    if spec.devices == "*":
        devices = [n for n in names if n not in sources]
    else:
        devices = list(spec.devices)
        for i, d in enumerate(devices):
            if d not in names:
                raise InputError(f"{source}: devices[{i}]: {d!r} is not a node of {topo.name}; "
                                 f"fix: use one of {', '.join(names)}")
            if d in sources:
                raise InputError(f"{source}: devices[{i}]: {d!r} is a camera; cameras only "
                                 "send frames; fix: list edge devices only")
    if not devices:
        raise InputError(f"{source}: no edge devices to run the models; fix: list devices:")
    return Workload(spec, tuple(cameras), tuple(devices), source)


def inline_traces(data: dict, base: Path, source: str) -> dict:
    """The file's pedestrian traces read into `points:` (a copy that runs from anywhere)."""
    jobs = []
    for i, job in enumerate(data.get("jobs") or []):
        peds = job.get("pedestrians") if isinstance(job, dict) else None
        if isinstance(peds, dict) and isinstance(peds.get("trace"), str):
            p = Path(peds["trace"])
            pts = _trace(p if p.is_absolute() else base / p, f"{source}: jobs[{i}]").points
            job = {**job, "pedestrians": {"points": [list(x) for x in pts]}}
        jobs.append(job)
    return {**data, "jobs": jobs}
