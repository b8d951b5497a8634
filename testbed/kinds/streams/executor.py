"""The streams executor: DAG jobs processing a stream of items (ENTS; DCEI's camera streams).

Each placed job becomes task processes (workloads/dag_task.py) exchanging real bytes over the
flows the Plan routes and rates; a task that exits with an error (or a broken connection)
fails its job with the reason, the job's other processes are stopped, and the run goes on.
Items are never dropped silently. Tables: jobs.csv (measured vs predicted throughput and
latency per job), items.csv, hops.csv, tasks.csv, events.csv.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace

import pandas as pd

from testbed.experiment.enforce import FlowSet
from testbed.experiment.loop import Experiment
from testbed.kinds.streams import traces
from testbed.kinds.streams.wiring import JobWiring, Ports, tc_rate_mbit, wire
from testbed.routing import FlowSpec
from testbed.schedulers.jobs import Job
from testbed.schedulers.plan import Plan
from testbed.schedulers.simulate import time_average


@dataclass
class JobRun:
    job: Job
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_s: float = 0.0
    ended_s: float | None = None
    status: str = "running"
    reason: str = ""
    predicted: list[tuple[float, float, float]] = field(default_factory=list)  # (t, thr, lat)
    wiring: JobWiring | None = None
    placement: tuple = ()
    flows: FlowSet | None = None


class Streams(Experiment):
    kind = "streams"
    program = "dag_task.py"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ips = {n: v["ip"] for n, v in self.ledger.topology["nodes"].items()}
        self.line_bw = {frozenset(lk["between"]): lk["bw_mbit"]
                        for lk in self.ledger.topology["links"]}
        self.ports = Ports()
        self.runs: dict[str, JobRun] = {}

    # ---- hooks -------------------------------------------------------------------------------
    def running(self) -> list[str]:
        return [n for n, r in self.runs.items() if r.status == "running"]

    def flow_sets(self) -> list[FlowSet]:
        return [r.flows for r in self.runs.values() if r.flows]

    def not_placed(self, units: list[Job]) -> None:
        for j in units:
            self.runs[j.name] = JobRun(j, status="not placed", reason="did not fit the network")

    def start(self, placed: list[Job], plan: Plan) -> None:
        starting = [self._prepare(job, plan) for job in placed]
        moved = self._moved_flows(plan)
        failed = self.enforcer.apply(
            [(self.runs[name].flows, specs) for name, specs in moved.items()],
            [(r.flows, list(r.flows.specs)) for r in starting])
        for owner, why in failed.items():
            self.stop_unit(owner, "failed", why)
        for r in starting:
            self._start_processes(r)
        self.plan = replace(plan, waiting=())
        for name, pred in self.plan.predicted.items():
            r = self.runs.get(name)
            if r and r.status == "running":
                r.predicted.append((self.now(), pred.throughput, pred.latency_s))

    def poll(self) -> set[str]:
        ended = set()
        for name, r in self.runs.items():
            if r.status != "running":
                continue
            codes = {t: p.poll() for t, p in r.processes.items()}
            bad = {t: c for t, c in codes.items() if c not in (None, 0)}
            if bad:
                task, code = next(iter(bad.items()))
                self.stop_unit(name, "failed", f"task {task} exited with code {code}: "
                               f"{self.processes.last_log_line(f'{name}.{task}')}"
                               + self.links_down_note())
                ended.add(name)
            elif all(c == 0 for c in codes.values()):
                r.status, r.ended_s = "done", self.now()
                self.enforcer.release(r.flows)
                ended.add(name)
            elif codes.get("source") == 0 and self.now() - r.started_s > (
                    (self.opts.duration_s or r.job.duration_s) + self.opts.drain_s + 10):
                self.stop_unit(name, "failed", "tasks did not finish after the source ended"
                               + self.links_down_note())
                ended.add(name)
        return ended

    def stop_unit(self, name: str, status: str, reason: str) -> None:
        r = self.runs[name]
        self.processes.stop(list(r.processes.values()))
        r.status, r.reason, r.ended_s = status, reason, self.now()
        if r.flows:
            self.enforcer.release(r.flows)

    # ---- placing and starting a job ----------------------------------------------------------
    def _prepare(self, job: Job, plan: Plan) -> JobRun:
        r = JobRun(job, started_s=self.now())
        self.runs[job.name] = r
        duration = self.opts.duration_s or job.duration_s
        options = {"compute": self.opts.compute, "duration_s": duration,
                   "window": self.opts.window, "rate_fps": self.opts.rate_fps,
                   "items": self.opts.items, "gops_per_core": self.opts.gops_per_core,
                   "spin_per_s": self.profile.spin_per_s,
                   "trace_dir": str(self.out / "traces"),
                   "cores": {n: v.get("cpu") for n, v in self.ledger.topology["nodes"].items()},
                   "line_bw": self.line_bw, "resolution": self.opts.resolution,
                   "drain_s": self.opts.drain_s}
        r.wiring = wire(job, plan, self.ips, self.ports, options)
        r.placement = tuple(sorted((p.task, p.node) for p in plan.placements_of(job.name)))
        r.flows = FlowSet(job.name, [
            {"job": f.job, "src_task": f.src_task, "dst_task": f.dst_task, "src": f.src,
             "dst": f.dst, "volume_bytes": f.volume_bytes} for f, _ in r.wiring.flows],
            specs=[s for _, s in r.wiring.flows])
        return r

    def _moved_flows(self, new: Plan) -> dict[str, list[FlowSpec]]:
        """Running jobs whose flows the new Plan routes or rates differently (OTFA, TP), with
        the FlowSpecs that carry the new paths and rates."""
        moved = {}
        for name, r in self.runs.items():
            if r.status != "running" or not r.flows or not r.flows.ids or not r.wiring:
                continue
            old = {f.key: (f.path, f.rate_mbit) for f in self.plan.flows_of(name)}
            by_key = {f.key: f for f in new.flows_of(name)}
            if old != {k: (f.path, f.rate_mbit) for k, f in by_key.items()}:
                moved[name] = [replace(spec, path=by_key[flow.key].path, rate_mbit=tc_rate_mbit(
                    by_key[flow.key].rate_mbit, flow.volume_bytes, by_key[flow.key].path,
                    self.line_bw)) for flow, spec in r.wiring.flows]
        return moved

    def _start_processes(self, r: JobRun) -> None:
        if r.status != "running":
            return
        try:
            for proc in r.wiring.processes:
                r.processes[proc.task] = self.processes.spawn(
                    proc.node, f"{proc.job}.{proc.task}", proc.config)
        except OSError as e:
            self.stop_unit(r.job.name, "failed", f"start: {e}")

    # ---- results -----------------------------------------------------------------------------
    def write(self) -> pd.DataFrame:
        tdir = self.out / "traces"
        all_items, all_hops, all_tasks, all_events, rows = [], [], [], [], []
        for name, r in self.runs.items():
            events = traces.read_events(tdir, name)
            items = traces.items_table(events) if len(events) else pd.DataFrame()
            m = traces.measured(items, self.opts.warmup_items) if len(items) else {}
            pred_thr = time_average([(t, v) for t, v, _ in r.predicted], r.started_s,
                                    r.ended_s) if r.predicted else float("nan")
            pred_lat = r.predicted[0][2] * 1000 if r.predicted else float("nan")
            reason = r.reason or "; ".join(traces.errors(events))
            if r.status == "done" and m.get("items_done", 0) < m.get("items_emitted", 0):
                reason = (f"{m['items_emitted'] - m['items_done']} items emitted but not "
                          "completed before the source's drain time")
            measured = m.get("throughput_measured_items_s", float("nan"))
            rows.append({
                "job": name, "scheduler": self.opts.scheduler, "status": r.status,
                "reason": reason, "compute": self.opts.compute,
                "throughput_measured_items_s": measured,
                "throughput_predicted_items_s": pred_thr,
                "fidelity": measured / pred_thr if pred_thr else float("nan"),
                "latency_ms_p50": m.get("latency_ms_p50", float("nan")),
                "latency_ms_p95": m.get("latency_ms_p95", float("nan")),
                "latency_ms_min": m.get("latency_ms_min", float("nan")),
                "latency_ms_unloaded_predicted": pred_lat,
                "waiting_s": r.started_s - r.job.arrival_s if r.status != "not placed"
                else float("nan"),
                "arrival_s": r.job.arrival_s, "started_s": r.started_s, "ended_s": r.ended_s,
                "items_emitted": m.get("items_emitted", 0), "items_done": m.get("items_done", 0),
                "placement": " ".join(f"{t}@{n}" for t, n in r.placement),
            })
            if len(events):
                all_events.append(events)
                all_items.append(items)
                all_hops.append(traces.hops_table(events))
                all_tasks.append(traces.tasks_table(events))
        jobs = pd.DataFrame(rows)
        jobs.to_csv(self.out / "jobs.csv", index=False)
        for fname, frames in (("items.csv", all_items), ("hops.csv", all_hops),
                              ("tasks.csv", all_tasks), ("events.csv", all_events)):
            if frames:
                pd.concat(frames, ignore_index=True).to_csv(self.out / fname, index=False)
        return jobs

    def metadata(self) -> dict:
        return {"jobs": [j.__dict__ | {"tasks": [t.__dict__ for t in j.tasks]}
                         for j in self.units]}
