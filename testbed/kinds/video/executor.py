"""The video kind's run on a testbed (DCEI): profile both models inside every edge device,
map the camera streams and place the re-ID instances, enforce the routes of frames and crops,
and run the pipeline for real: cameras send JPEG frames over the emulated links, detectors
decode and run SSDLite on them, crops go to (possibly shared, possibly remote) re-ID
instances that batch them (workloads/video_pipeline.py). Before the measured run the plan runs
for the workload's `pilot` seconds, in the same processes, and the step costs measured then
price the prediction the run reports (what the scheduler predicted on the solo profiles is
kept beside it).

Tables: jobs.csv (per stream: frame rate and latency measured beside predicted, eq. 5.2's
terms measured and predicted, the re-ID instance used), frames.csv (one row per processed
frame), reid.csv (one row per re-ID batch, with the streams it served).
"""

from __future__ import annotations

import json
import selectors
import time
from typing import Any

import pandas as pd

from testbed.errors import NetworkError
from testbed.experiment.single import SingleUnit
from testbed.kinds.video.decision import (
    BIN_S,
    FRAME_PORT_BASE,
    REID_PORT_BASE,
    WARMUP_S,
    Decidable,
    VideoDecision,
    build,
    frame_key,
    played_out,
    profile_config,
)
from testbed.kinds.video.measured import costs_table, measured_costs
from testbed.kinds.video.problem import Mapping
from testbed.kinds.video.spec import Workload, with_timeline_counts
from testbed.routing import FlowSpec
from testbed.schedulers.plan import Plan

PROFILE_TIMEOUT_S = 300.0
CAMERA_START_S = 3.0  # cameras (Python, numpy, Pillow at 0.1 core) start together after this
READY_TIMEOUT_S = 180.0  # loading torch and two models under a small CPU quota
PILOT_DRAIN_S = 60.0  # after a pilot's last frame: crops still waiting for re-ID


class Video(SingleUnit):
    kind = "video"
    unit_name = "video"
    not_placed_reason = "the strategy placed no stream"
    program = "video_pipeline.py"

    def torch_steps(self) -> bool:
        return True

    def __init__(self, ledger, units: list, opts, progress=lambda s: None) -> None:
        super().__init__(ledger, units, opts, progress)
        self.w: Workload = units[0]
        self.ips = {n: v["ip"] for n, v in ledger.topology["nodes"].items()}
        self.cores = {n: v.get("cpu") or 1.0 for n, v in ledger.topology["nodes"].items()}
        self.duration = opts.duration_s or self.w.spec.duration
        self.profiles: dict[str, dict] = {}  # device -> its models' seconds, frame sizes
        self.captures: dict[str, dict] = {}  # camera node -> seconds to make a frame
        self.decision: VideoDecision | None = None  # priced on the pilot's step costs
        self.decided: VideoDecision | None = None  # as the scheduler predicted it
        self.pilot_costs: dict[str, dict[str, float]] = {}

    def _threads(self, node: str) -> int:
        return max(1, round(self.cores[node]))

    # ---- before the clock: profiles and the problem ----------------------------------------
    def take_workload_events(self, events: list, source: str) -> None:
        """Pedestrian counts set by the run's timeline drive the cameras' streams."""
        self.w = with_timeline_counts(
            self.w, [(e.t_s, e.target[0], e.params["count"], e.event) for e in events], source)

    def prepare(self) -> None:
        cfg = profile_config(self.w)
        for node in self.w.devices:
            if node in self.profile.unable:
                raise NetworkError(f"{self.w.source}: node {node} cannot run tasks: "
                                   f"{self.profile.unable[node]}")
        # all devices and cameras at once: their CPU quotas are theirs, as during the run;
        # none measures before all are loaded, and a device that has measured keeps
        # detecting until every device has
        cameras = sorted({c.spec.source for c in self.w.cameras})
        self.progress(f"profiling detection and re-ID on {len(self.w.devices)} devices, "
                      f"capture on {len(cameras)} cameras")
        said = self.processes.answers(
            {**{f"profile.{n}": (n, {**cfg, "role": "profile", "threads": self._threads(n),
                                     "hold": True})
                for n in self.w.devices},
             **{f"capture.{n}": (n, {"frames": cfg["frames"], "role": "profile_camera"})
                for n in cameras}}, PROFILE_TIMEOUT_S, together=True)
        self.profiles = {n: said[f"profile.{n}"] for n in self.w.devices}
        self.captures = {n: said[f"capture.{n}"] for n in cameras}
        first = self.profiles[self.w.devices[0]]
        problem = build(self.w, self.profile.view, self.profiles,
                        {c.name: first["frame_bytes"][frame_key(c)] for c in self.w.cameras},
                        self.duration,
                        {c.name: self.captures[c.spec.source]["capture_s"][frame_key(c)]
                         for c in self.w.cameras})
        seed = self.opts.seed if self.opts.seed is not None else self.w.spec.seed
        self.units = [Decidable(self.w, problem, seed, self.duration)]

    # ---- the decision loop's hooks ---------------------------------------------------------
    def start(self, placed: list, plan: Plan) -> None:
        if not placed:
            return
        ext: VideoDecision = plan.extension
        self.decision = self.decided = ext
        self.status = "running"
        specs = [FlowSpec(src=f.src, dst=f.dst, path=f.path, dport=f.port) for f in plan.flows]
        self.fs.labels = [{"job": f.job, "src_task": f.src_task, "dst_task": f.dst_task,
                           "src": f.src, "dst": f.dst} for f in plan.flows]
        failed = self.enforcer.apply([], [(self.fs, specs)])
        if failed:
            self.status, self.reason = "failed", failed[self.fs.owner]
            return
        trace = self.out / "traces"
        cams = {c.name: (k, c) for k, c in enumerate(self.w.cameras)}
        pilot_s = self.w.spec.pilot
        serves = {n: [s for s, m in ext.reid.items() if m == n] for n in range(len(ext.instances))}
        hosts = sorted({*ext.detect.values(), *ext.instances})
        for device in hosts:  # one process per device: every model it hosts (see the program)
            streams = []
            for name in (s for s, d in ext.detect.items() if d == device):
                k, c = cams[name]
                n = ext.reid[name]
                streams.append({
                    "stream": name, "port": FRAME_PORT_BASE + k,
                    "input": c.spec.tasks.detect.input, "reid_ip": self.ips[ext.instances[n]],
                    "reid_port": REID_PORT_BASE + n, "every": c.spec.tasks.reid.every,
                    "crop_bytes": c.spec.tasks.reid.crop_bytes})
            instances = [{"id": n, "port": REID_PORT_BASE + n, "clients": len(serves[n])}
                         for n, d in enumerate(ext.instances) if d == device]
            self.procs[f"edge.{device}"] = self.processes.spawn(device, f"edge.{device}", {
                "role": "edge", "threads": self._threads(device), "streams": streams,
                "instances": instances, "trace": str(trace / f"edge.{device}.jsonl"),
                "sessions": 2 if pilot_s > 0 else 1}, talk=True)
        edges = [f"edge.{d}" for d in hosts]
        if self._lines(edges, READY_TIMEOUT_S, "did not get ready", expect="ready") is None:
            return
        if pilot_s > 0:
            self.progress(f"pilot: the plan runs {pilot_s:g} s to measure its step costs")
            self._cameras(ext, pilot_s, "pilot.")
            said = self._lines(edges, CAMERA_START_S + pilot_s + PILOT_DRAIN_S,
                               "did not finish the pilot")
            if said is None:
                return
            records = [r for e in edges for r in json.loads(said[e])["pilot"]]
            (trace / "pilot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            problem = self.units[0].problem
            mapping = Mapping(ext.detect, ext.reid, tuple(ext.instances), tuple(ext.not_placed))
            costs = measured_costs(
                problem, mapping, [r for r in records if r.get("type") == "frame"],
                [r for r in records if r.get("type") == "batch"], warmup_s=WARMUP_S)
            self.pilot_costs = costs_table(costs)
            self.decision = played_out(ext, costs, self.w, self.duration)
        self._cameras(ext, self.duration, "")

    def _cameras(self, ext: VideoDecision, duration_s: float, prefix: str) -> None:
        """Start every placed stream's camera, all at one moment a few seconds from now."""
        trace = self.out / "traces"
        cams = {c.name: (k, c) for k, c in enumerate(self.w.cameras)}
        start_at = time.time() + CAMERA_START_S
        for name, device in ext.detect.items():
            k, c = cams[name]
            label = f"{prefix}camera.{name}"
            self.procs[label] = self.processes.spawn(c.spec.source, label, {
                "role": "camera", "dst_ip": self.ips[device], "port": FRAME_PORT_BASE + k,
                "fps": c.spec.frames.fps, "size": list(c.spec.frames.size),
                "quality": c.spec.frames.quality, "duration_s": duration_s,
                "pedestrians": [list(p) for p in c.pedestrians.points], "seed": k,
                "start_at": start_at, "trace": str(trace / f"{label}.jsonl")})

    def _lines(self, labels: list[str], timeout_s: float, failing: str,
               expect: str | None = None) -> dict[str, str] | None:
        """The next line each process prints (readiness, a pilot's records); one that dies,
        stays silent or says something else than `expect` fails the run with its log's last
        line (or a process that died meanwhile, a camera say), and None is returned."""
        deadline = time.monotonic() + timeout_s
        said = {}
        for label in labels:
            proc = self.procs[label]
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    if time.monotonic() >= deadline:
                        break
                line = proc.stdout.readline() if proc.poll() is None else ""
            if not line.strip() or (expect is not None and line.strip() != expect):
                dead = [k for k, p in self.procs.items() if p.poll() not in (None, 0)]
                why = dead[0] if dead else label
                self.stop_unit(self.w.name, "failed", f"{label} {failing}: {why}: "
                               f"{self.processes.last_log_line(why)}")
                return None
            said[label] = line
        return said

    # ---- results ---------------------------------------------------------------------------
    def write(self) -> pd.DataFrame:
        ext = self.decision
        hosted = [r for d in self.w.devices for r in self.read_trace(f"edge.{d}.jsonl")]
        frames = pd.DataFrame([{k: v for k, v in r.items() if k != "type"} for r in hosted
                               if r.get("type") == "frame"])
        if not frames.empty:
            source = {c.name: c.spec.source for c in self.w.cameras}
            frames["t_capture"] = frames["captured_at"]
            for stream, rows in frames.groupby("stream"):  # stamped by the camera's clock
                frames.loc[rows.index, "t_capture"] = self.processes.testbed_clock(
                    source[stream], rows["captured_at"])
            frames = frames.drop(columns="captured_at")
            done = frames["t_reid_done"] if "t_reid_done" in frames else float("nan")
            frames["t_done"] = frames["t_detect_end"].where(frames["crops"] == 0, done)
            t_first = frames.groupby("stream")["t_capture"].transform("min")
            frames["t_s"] = frames["t_capture"] - t_first
            frames["done_s"] = frames["t_done"] - t_first  # on the camera's clock
            frames["latency_ms"] = (frames["t_done"] - frames["t_capture"]) * 1000
            frames["transfer_ms"] = (frames["t_recv"] - frames["t_capture"]) * 1000
            frames["wait_ms"] = (frames["t_detect_start"] - frames["t_recv"]) * 1000
            frames["detect_ms"] = (frames["t_detect_end"] - frames["t_detect_start"]) * 1000
            frames["reid_ms"] = (frames["t_done"] - frames["t_detect_end"]).where(
                frames["crops"] > 0) * 1000
        rows = []
        for c in self.w.cameras:
            sent = self.read_trace(f"camera.{c.name}.jsonl")
            mine = frames[frames["stream"] == c.name] if not frames.empty else frames
            warm = min(WARMUP_S, self.duration / 2)  # the window the prediction covers
            steady = mine[(mine["t_s"] >= warm) & (mine["t_s"] < self.duration)] \
                if len(mine) else mine
            span = self.duration - warm
            placed = ext is not None and c.name in ext.detect
            pred = ext.latency_predicted.get(c.name, {}) if ext else {}
            fps_pred = ext.fps_predicted.get(c.name, float("nan")) if ext else float("nan")
            fps_decided = self.decided.fps_predicted.get(c.name, float("nan")) \
                if self.decided else float("nan")
            # throughput: frames whose processing (re-ID included) ended in the window; frames
            # captured in it but finished after it would add up to the re-ID backlog
            ended = mine[(mine["done_s"] >= warm) & (mine["done_s"] < self.duration)] \
                if len(mine) else mine
            fps = len(ended) / span if placed and span > 0 else float("nan")
            with_crops = steady[steady["crops"] > 0] if len(steady) else steady
            rows.append({
                "job": c.name, "scheduler": self.opts.scheduler,
                "status": self.status if placed else "not placed",
                "reason": self.reason if placed else "no memory for its models",
                "source": c.spec.source, "detect_on": ext.detect.get(c.name, "") if ext else "",
                "reid_instance": ext.reid.get(c.name, -1) if placed else -1,
                "reid_on": ext.instances[ext.reid[c.name]] if placed else "",
                "camera_fps": c.spec.frames.fps,
                "fps_measured": fps, "fps_predicted": fps_pred,
                "fidelity": fps / fps_pred if fps_pred else float("nan"),
                "fps_decided": fps_decided,
                "fidelity_decided": fps / fps_decided if fps_decided else float("nan"),
                "latency_ms_p50": _q(steady, "latency_ms", 0.5),
                "latency_ms_p95": _q(steady, "latency_ms", 0.95),
                "latency_ms_predicted": pred.get("total_s", float("nan")) * 1000,
                "transfer_ms_p50": _q(steady, "transfer_ms", 0.5),
                "transfer_ms_predicted": pred.get("transfer_s", float("nan")) * 1000,
                "wait_ms_p50": _q(steady, "wait_ms", 0.5),
                "detect_ms_p50": _q(steady, "detect_ms", 0.5),
                "detect_ms_predicted": pred.get("detect_s", float("nan")) * 1000,
                "reid_ms_p50": _q(with_crops, "reid_ms", 0.5),
                "reid_offload_ms_predicted": (pred.get("reid_s", float("nan"))
                                              + pred.get("offload_s", float("nan"))) * 1000,
                "frames_sent": len(sent), "frames_processed": len(mine),
                "frames_skipped": int(mine["skipped_before"].max()) if len(mine) else 0,
                "crops_sent": int(mine["crops"].sum()) if len(mine) else 0,
                "crops_unanswered": int(((mine["crops"] > 0) & mine["t_done"].isna()).sum())
                if len(mine) else 0})
        jobs = pd.DataFrame(rows)
        jobs.to_csv(self.out / "jobs.csv", index=False)
        self._over_time(frames).to_csv(self.out / "fps_over_time.csv", index=False)
        frames.to_csv(self.out / "frames.csv", index=False)
        batches = [{**b, "device": ext.instances[b["instance"]],
                    "streams": " ".join(b["streams"])} for b in hosted
                   if b.get("type") == "batch"]
        pd.DataFrame(batches).to_csv(self.out / "reid.csv", index=False)
        (self.out / "profiles.json").write_text(json.dumps(
            {**self.profiles, **{f"camera {n}": v for n, v in self.captures.items()}}, indent=1))
        return jobs

    def _over_time(self, frames: pd.DataFrame) -> pd.DataFrame:
        """Each placed stream's frame rate per BIN_S bin, measured (frames whose processing
        ended in the bin, on the camera's clock) beside predicted (the model on the bin's
        pedestrian counts), and the stream's pedestrians at the bin's start. The first bin
        holds the models' warm-up, which the prediction leaves out."""
        ext, rows = self.decision, []
        for c in self.w.cameras:
            if ext is None or c.name not in ext.fps_bins:
                continue
            done = frames.loc[frames["stream"] == c.name, "done_s"].dropna() \
                if not frames.empty else pd.Series(dtype=float)
            for k, predicted in enumerate(ext.fps_bins[c.name]):
                a, b = k * BIN_S, min((k + 1) * BIN_S, self.duration)
                ended = int(((done >= a) & (done < b)).sum())
                rows.append({"job": c.name, "t_s": a, "pedestrians": c.pedestrians.at(a),
                             "fps_measured": ended / (b - a) if b > a else float("nan"),
                             "fps_predicted": predicted})
        return pd.DataFrame(rows, columns=["job", "t_s", "pedestrians", "fps_measured",
                                           "fps_predicted"])

    def metadata(self) -> dict[str, Any]:
        return {"workload": {"file": self.w.source, "devices": list(self.w.devices),
                             "cameras": [c.name for c in self.w.cameras],
                             "duration_s": self.duration, "pilot_s": self.w.spec.pilot},
                "status": self.status, "reason": self.reason,
                "decision": None if self.decision is None else self.decision.__dict__,
                "decided": None if self.decided is None else self.decided.__dict__,
                "pilot_costs": self.pilot_costs}


def _q(df: pd.DataFrame, col: str, q: float) -> float:
    if not len(df) or col not in df or df[col].dropna().empty:
        return float("nan")
    return float(df[col].dropna().quantile(q))
