"""One experiment on a running testbed: jobs arrive, the scheduler decides, the Plan is enforced
(paths and rates through the controller client, one batch per decision), task processes run on
their nodes and exchange real bytes, finished jobs release resources; then the traces become
tidy CSV beside the Plan's predictions.

Items are never dropped silently: a task that exits with an error (or a broken connection)
fails its job with the reason, the job's other processes are stopped, and the run goes on.
Ctrl-C stops every process and keeps what was recorded.

The run survives its controller: a dead or stuck controller is restarted (the switches keep
forwarding meanwhile, and the new one re-installs the recorded flows), flows it did not know
are installed again, and each incident is in run.json. Whatever ends the run, its CSV files
are written from what was recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from testbed import lifecycle as api
from testbed.devices.ssh import Endpoint, Session
from testbed.devices.stats import Collector
from testbed.errors import InputError, NetworkError, TestbedError
from testbed.net import build
from testbed.net.ledger import Ledger
from testbed.runner import traces
from testbed.runner.nodefiles import LocalFiles, files_for
from testbed.runner.sampler import Sampler
from testbed.runner.wiring import JobWiring, Ports, TaskProcess, tc_rate_mbit, wire
from testbed.schedulers import get as get_scheduler
from testbed.schedulers.jobs import Job
from testbed.schedulers.network import DEFAULT_GOPS_PER_CORE, NetworkView
from testbed.schedulers.plan import Plan
from testbed.schedulers.simulate import time_average
from testbed.sdn import FlowClient
from testbed.topology.model import Topology

ROOT = Path(__file__).resolve().parent.parent.parent
TASK_PROGRAM = ROOT / "workloads" / "dag_task.py"
Progress = Callable[[str], None]


@dataclass
class RunOptions:
    scheduler: str
    out_dir: Path
    duration_s: float | None = None  # overrides each job's duration
    seed: int | None = None
    compute: str = "synthetic"  # or "torch"
    window: int | None = None  # items in flight per job (default: tasks + 1)
    rate_fps: float | None = None  # cap on the source's frame rate
    items: int | None = None  # stop each source after this many items
    warmup_items: int = 1
    sample_s: float = 1.0
    k_paths: int = 3
    gops_per_core: float = DEFAULT_GOPS_PER_CORE  # synthetic mode's unit of work
    drain_s: float = 10.0  # the source waits this long for items in flight after its end
    resolution: int = 224  # input size of torch models
    unprivileged: bool = False  # tasks on host/docker nodes run as nobody, no capabilities


@dataclass
class JobRun:
    job: Job
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    flow_ids: list[int] = field(default_factory=list)
    started_s: float = 0.0
    ended_s: float | None = None
    status: str = "running"
    reason: str = ""
    predicted: list[tuple[float, float, float]] = field(default_factory=list)  # (t, thr, lat)
    wiring: JobWiring | None = None
    placement: tuple = ()
    specs: list = field(default_factory=list)  # the FlowSpecs installed now (with flow_ids)
    installed_s: float = 0.0
    installs: list[dict] = field(default_factory=list)  # one row per flow installation


class Runner:
    """Holds one run's state; `run()` drives it. Not reusable across runs."""

    def __init__(self, ledger: Ledger, jobs: list[Job], opts: RunOptions,
                 progress: Progress = lambda s: None) -> None:
        self.ledger, self.jobs, self.opts, self.progress = ledger, jobs, opts, progress
        self.topology = Topology.from_dict(ledger.topology, ledger.topology_file)
        self.incidents: list[dict] = []  # controller losses and what was done about them
        self._recovering = threading.Lock()
        self._resync = False
        self.client = FlowClient(ledger, recover=self._recover_controller)
        self.scheduler = get_scheduler(opts.scheduler)
        self.ips = {n: v["ip"] for n, v in ledger.topology["nodes"].items()}
        self.line_bw = {frozenset(lk["between"]): lk["bw_mbit"]
                        for lk in ledger.topology["links"]}
        self.ports = Ports()
        self.out = opts.out_dir
        for sub in ("traces", "logs", "configs", "decisions"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, JobRun] = {}
        self.files: dict[str, LocalFiles] = {}  # node -> how its files travel
        self.collect: list[tuple[LocalFiles, Path]] = []  # traces to bring back
        self.plan = Plan(opts.scheduler)
        self.t0 = time.monotonic()

    # ---- set-up ------------------------------------------------------------------------------
    def calibrate(self) -> None:
        """How fast the synthetic compute loop runs on a whole core (this process) and inside
        each node (its cgroup quota): the node speeds the scheduler plans with are measured."""
        self.progress("profiling node speeds")
        if self.opts.compute == "torch":  # one core's speed on real convolutions
            res = subprocess.run([sys.executable, str(TASK_PROGRAM), "--calibrate-torch"],
                                 capture_output=True, text=True, check=True,
                                 cwd=TASK_PROGRAM.parent)
            self.opts.gops_per_core = float(res.stdout)
        probe = [sys.executable, str(TASK_PROGRAM), "--calibrate"]
        self.spin_per_s = statistics.median(
            float(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
            for _ in range(3))
        self.speeds = {}
        for node, info in self.ledger.topology["nodes"].items():
            argv, env = api.workload_command(self.ledger, node, TASK_PROGRAM.name)
            res = api.run(self.ledger.name, node, [*argv, "--calibrate"], timeout=60,
                          env={**os.environ, **env})
            if res.returncode != 0:  # e.g. a device that does not answer: fail, do not hang
                raise NetworkError(f"cannot measure node {node}'s speed: "
                                   f"{(res.stderr or res.stdout).strip()[-300:]}")
            single = float(res.stdout) / self.spin_per_s * self.opts.gops_per_core
            cores = info.get("cpu") or 1.0
            self.speeds[node] = single * max(1.0, cores)  # several tasks use several cores
        self.view = NetworkView.from_topology(self.topology, speeds=self.speeds,
                                              gops_per_core=self.opts.gops_per_core,
                                              k_paths=self.opts.k_paths)

    # ---- controller loss -------------------------------------------------------------------
    def _recover_controller(self) -> bool:
        """Restart a dead or stuck controller (called by the flow client when the controller
        does not answer, from any thread); returns whether it was restarted."""
        with self._recovering:
            try:
                restarted = build.ensure_controller(self.ledger)
            except TestbedError as e:
                self.incidents.append({"t_s": round(self.now(), 3), "what": "controller lost",
                                       "action": f"restart failed: {e}"})
                return False
            if restarted:
                self.incidents.append({
                    "t_s": round(self.now(), 3), "what": "controller lost",
                    "action": f"restarted (pid {self.ledger.controller.pid}); recorded flows "
                              "re-installed"})
                self.progress("the controller was lost: restarted it")
                self._resync = True
            return restarted

    def _resync_flows(self) -> None:
        """After a restart, install again the flows of running jobs that the new controller
        does not know (the old one died before recording them)."""
        self._resync = False
        known = {f["id"] for f in self.client.list()}
        for r in self.runs.values():
            if r.status != "running" or not r.flow_ids or set(r.flow_ids) <= known:
                continue
            with contextlib.suppress(TestbedError):
                self.client.remove([i for i in r.flow_ids if i in known])
            self.client.forget_rates([replace(s, id=i) for s, i in
                                      zip(r.specs, r.flow_ids, strict=True)])
            try:
                self._install(r, r.specs, self.client.add(r.specs))
                self.incidents.append({"t_s": round(self.now(), 3), "what": f"job {r.job.name}"
                                       ": flows unknown to the restarted controller",
                                       "action": "installed again"})
            except TestbedError as e:
                self._stop_job(r, "failed", f"its flows were lost with the controller and "
                                            f"could not be installed again: {e}")

    def _watch_controller(self) -> None:
        if not (self.ledger.controller and self.ledger.controller.alive()):
            self._recover_controller()
        if self._resync:
            with contextlib.suppress(TestbedError):
                self._resync_flows()

    # ---- the loop ----------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> pd.DataFrame:
        self.calibrate()
        self.sampler = Sampler(self.ledger, self.client, self.opts.sample_s).start()
        self.t0 = self.sampler.t0
        self.epoch0 = time.time() - (time.monotonic() - self.t0)
        self.device_stats = [
            Collector(Session(Endpoint.of(node, info["ssh"]), retry_for_s=5),
                      self.opts.sample_s).start()
            for node, info in self.ledger.topology["nodes"].items() if info["kind"] == "device"]
        pending = sorted(self.jobs, key=lambda j: (j.arrival_s, j.name))
        waiting: list[Job] = []
        last_watch = 0.0
        try:
            while pending or waiting or any(r.status == "running" for r in self.runs.values()):
                if self.now() - last_watch >= 0.5:
                    self._watch_controller()
                    last_watch = self.now()
                changed = False
                while pending and pending[0].arrival_s <= self.now():
                    waiting.append(pending.pop(0))
                    changed = True
                ended = self._poll()
                if ended:
                    self.plan = self.plan.without(ended)
                    changed = True
                if changed and waiting:
                    waiting = self._decide(waiting)
                if waiting and not pending and not any(
                        r.status == "running" for r in self.runs.values()):
                    for j in waiting:  # nothing left that could free resources for them
                        self.runs[j.name] = JobRun(j, status="not placed",
                                                   reason="did not fit the network")
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            self.progress("interrupted: stopping every task, keeping what was recorded")
            for r in self.runs.values():
                if r.status == "running":
                    self._stop_job(r, "interrupted", "Ctrl-C")
        finally:  # whatever ended the loop, the recorded traces become CSV files
            for r in self.runs.values():
                if r.status == "running":
                    self._stop_job(r, "interrupted", "run ended")
            self.sampler.stop()
            for c in self.device_stats:
                c.stop()
            with contextlib.suppress(TestbedError):
                self._watch_controller()  # flows are removed through a live controller
            for r in self.runs.values():
                self._release(r)
            leaked = [i for r in self.runs.values() for i in r.flow_ids]
            if leaked:
                self.incidents.append({"t_s": round(self.now(), 3), "what": "flows not removed",
                                       "action": f"ids {leaked}: `testbed flow rm --all`"})
            jobs = self._write()
        return jobs

    def _decide(self, waiting: list[Job]) -> list[Job]:
        now = self.now()
        t0 = time.perf_counter()
        new = self.scheduler(self.view, self.plan, waiting, now)
        took = time.perf_counter() - t0
        new = replace(new, decision_s=took)
        n = len(list((self.out / "decisions").iterdir()))
        (self.out / "decisions" / f"{n:04d}.json").write_text(new.to_json())
        placed = [j for j in waiting if j.name not in new.waiting]
        starting = [self._prepare_job(job, new) for job in placed]
        self._enforce(self._moved_flows(new), starting)
        for r in starting:
            self._start_processes(r)
        self.plan = replace(new, waiting=())
        for name, pred in self.plan.predicted.items():
            r = self.runs.get(name)
            if r and r.status == "running":
                r.predicted.append((self.now(), pred.throughput, pred.latency_s))
        self.progress(f"t={now:.1f}s {self.opts.scheduler}: placed {len(placed)}, "
                      f"waiting {len(new.waiting)} ({took * 1000:.0f} ms)")
        return [j for j in waiting if j.name in new.waiting]

    def _moved_flows(self, new: Plan) -> dict[str, list]:
        """Running jobs whose flows the new Plan routes or rates differently (OTFA, TP), with
        the FlowSpecs that carry the new paths and rates."""
        moved = {}
        for name, r in self.runs.items():
            if r.status != "running" or not r.flow_ids or not r.wiring:
                continue
            old = {f.key: (f.path, f.rate_mbit) for f in self.plan.flows_of(name)}
            by_key = {f.key: f for f in new.flows_of(name)}
            if old != {k: (f.path, f.rate_mbit) for k, f in by_key.items()}:
                moved[name] = [replace(spec, path=by_key[flow.key].path, rate_mbit=tc_rate_mbit(
                    by_key[flow.key].rate_mbit, flow.volume_bytes, by_key[flow.key].path,
                    self.line_bw)) for flow, spec in r.wiring.flows]
        return moved

    def _prepare_job(self, job: Job, plan: Plan) -> JobRun:
        r = JobRun(job, started_s=self.now())
        self.runs[job.name] = r
        duration = self.opts.duration_s or job.duration_s
        options = {"compute": self.opts.compute, "duration_s": duration,
                   "window": self.opts.window, "rate_fps": self.opts.rate_fps,
                   "items": self.opts.items, "gops_per_core": self.opts.gops_per_core,
                   "spin_per_s": self.spin_per_s, "trace_dir": str(self.out / "traces"),
                   "cores": {n: v.get("cpu") for n, v in self.ledger.topology["nodes"].items()},
                   "line_bw": self.line_bw, "resolution": self.opts.resolution,
                   "drain_s": self.opts.drain_s}
        r.wiring = wire(job, plan, self.ips, self.ports, options)
        r.placement = tuple(sorted((p.task, p.node) for p in plan.placements_of(job.name)))
        return r

    def _enforce(self, moved: dict[str, list], starting: list[JobRun]) -> None:
        """One decision, one batch: remove the moved flows, then install the moved and the new
        ones in one call. If the batch is refused, each job is tried alone so that only the
        culprit fails."""
        if moved:
            self._collect_and_remove([self.runs[name] for name in moved])
        batch = [(self.runs[name], specs) for name, specs in moved.items()]
        batch += [(r, [s for _, s in r.wiring.flows]) for r in starting if r.wiring.flows]
        if not batch:
            return
        try:
            added = self.client.add([s for _, specs in batch for s in specs])
        except TestbedError:
            for r, specs in batch:
                try:
                    self._install(r, specs, self.client.add(specs))
                except TestbedError as e:
                    self._stop_job(r, "failed", f"enforcing its flows: {e}")
            return
        for r, specs in batch:
            self._install(r, specs, added[:len(specs)])
            added = added[len(specs):]

    def _start_processes(self, r: JobRun) -> None:
        if r.status != "running":
            return
        try:
            for proc in r.wiring.processes:
                r.processes[proc.task] = self._spawn(proc)
        except OSError as e:
            self._stop_job(r, "failed", f"start: {e}")

    def _spawn(self, proc: TaskProcess) -> subprocess.Popen:
        if proc.node not in self.files:
            self.files[proc.node] = files_for(self.ledger, proc.node, self.opts.unprivileged)
        files = self.files[proc.node]
        trace = Path(proc.config["trace"])
        config = {**proc.config, "trace": files.trace_path(trace)}
        self.collect.append((files, trace))
        cfg_path = files.put(self.out / "configs" / f"{proc.job}.{proc.task}.json",
                             json.dumps(config, indent=1))
        log = open(self.out / "logs" / f"{proc.job}.{proc.task}.log", "wb")  # noqa: SIM115
        argv, env = api.workload_command(self.ledger, proc.node, TASK_PROGRAM.name)
        drop = self.opts.unprivileged and self.ledger.topology["nodes"][proc.node]["kind"] in (
            "host", "docker")  # a device runs tasks as its SSH user anyway
        if drop:  # the only file the task writes: its trace, made and handed over here
            Path(config["trace"]).touch()
            os.chown(config["trace"], api.UNPRIVILEGED_UID, api.UNPRIVILEGED_UID)
        p = api.popen(self.ledger.name, proc.node, [*argv, cfg_path], unprivileged=drop,
                      stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        log.close()
        return p

    def _poll(self) -> set[str]:
        """Jobs that ended since the last poll (completed or failed)."""
        ended = set()
        for name, r in self.runs.items():
            if r.status != "running":
                continue
            codes = {t: p.poll() for t, p in r.processes.items()}
            bad = {t: c for t, c in codes.items() if c not in (None, 0)}
            if bad:
                task, code = next(iter(bad.items()))
                self._stop_job(r, "failed", f"task {task} exited with code {code}: "
                                            f"{self._last_log_line(name, task)}"
                                            + self._links_down_note())
                ended.add(name)
            elif all(c == 0 for c in codes.values()):
                r.status, r.ended_s = "done", self.now()
                self._release(r)
                ended.add(name)
            elif codes.get("source") == 0 and self.now() - r.started_s > (
                    (self.opts.duration_s or r.job.duration_s) + self.opts.drain_s + 10):
                self._stop_job(r, "failed", "tasks did not finish after the source ended"
                               + self._links_down_note())
                ended.add(name)
        return ended

    def _links_down_note(self) -> str:
        """'; links down: a-b' when the network lost links (a likely reason items stalled)."""
        down = [i for i, st in build.link_states(self.ledger).items() if st == "down"]
        if not down:
            return ""
        links = self.ledger.topology["links"]
        return "; links down now: " + ", ".join("-".join(links[i]["between"]) for i in down)

    def _last_log_line(self, job: str, task: str) -> str:
        try:
            lines = (self.out / "logs" / f"{job}.{task}.log").read_text().strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else "(no output; killed by a signal?)"

    def _stop_job(self, r: JobRun, status: str, reason: str) -> None:
        for p in r.processes.values():
            if p.poll() is None:
                p.kill()
        for p in r.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        r.status, r.reason, r.ended_s = status, reason, self.now()
        self._release(r)

    def _install(self, r: JobRun, specs: list, added: list) -> None:
        r.flow_ids = [f.id for f in added]
        r.specs, r.installed_s = list(specs), self.now()

    def _collect_and_remove(self, runs: list[JobRun]) -> None:
        """Record what each installed flow carried on each switch of its path (one row per
        installation: OTFA and TP may move a running job's flows), then remove the flows of
        all these jobs in one call."""
        carried = {f["id"]: f["hops"] for f in self.client.list()}
        for r in runs:
            for (flow, _), spec, fid in zip(r.wiring.flows, r.specs, r.flow_ids, strict=True):
                r.installs.append({
                    "job": flow.job, "src_task": flow.src_task, "dst_task": flow.dst_task,
                    "src": flow.src, "dst": flow.dst, "path": "-".join(spec.path),
                    "rate_mbit_line": spec.rate_mbit, "volume_bytes": flow.volume_bytes,
                    "sport": spec.sport, "dport": spec.dport, "installed_s": r.installed_s,
                    "removed_s": self.now(), "hop_bytes": " ".join(
                        f"{h['node']}:{h['bytes']}" for h in carried.get(fid, []))})
        self.client.remove([fid for r in runs for fid in r.flow_ids])
        for r in runs:
            r.flow_ids = []

    def _release(self, r: JobRun) -> None:
        if r.flow_ids:
            with contextlib.suppress(TestbedError):
                self._collect_and_remove([r])

    # ---- results -----------------------------------------------------------------------------
    def _write(self) -> pd.DataFrame:
        tdir = self.out / "traces"
        for files, trace in self.collect:  # traces written in containers or on devices
            files.fetch(trace)
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
            rows.append({
                "job": name, "scheduler": self.opts.scheduler, "status": r.status,
                "reason": reason, "compute": self.opts.compute,
                "throughput_measured_items_s": m.get("throughput_measured_items_s", float("nan")),
                "throughput_predicted_items_s": pred_thr,
                "fidelity": (m.get("throughput_measured_items_s", float("nan")) / pred_thr
                             if pred_thr else float("nan")),
                "latency_ms_p50": m.get("latency_ms_p50", float("nan")),
                "latency_ms_p95": m.get("latency_ms_p95", float("nan")),
                "latency_ms_predicted": pred_lat,
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
        pd.DataFrame(self.sampler.links).to_csv(self.out / "links.csv", index=False)
        pd.DataFrame(self.sampler.nodes).to_csv(self.out / "nodes.csv", index=False)
        if self.device_stats:  # on the run's clock, like nodes.csv
            rows = [{**r, "t_s": round(r["t_s"] - self.epoch0, 3)}
                    for c in self.device_stats for r in c.records]
            pd.DataFrame(rows).to_csv(self.out / "devices.csv", index=False)
        flows = [row for r in self.runs.values() for row in r.installs]
        pd.DataFrame(flows).to_csv(self.out / "flows.csv", index=False)
        pd.DataFrame([{"node": n, "speed_gops": s} for n, s in self.speeds.items()]).to_csv(
            self.out / "node_speeds.csv", index=False)
        (self.out / "run.json").write_text(json.dumps(self._metadata(), indent=1))
        return jobs

    def _metadata(self) -> dict:
        import importlib.metadata as md

        versions = {}
        for pkg in ("edge-testbed", "os-ken", "pyroute2", "pandas", "scipy", "torch"):
            with contextlib.suppress(md.PackageNotFoundError):
                versions[pkg] = md.version(pkg)
        return {"testbed": self.ledger.name, "topology_file": self.ledger.topology_file,
                "incidents": self.incidents,
                "topology": self.ledger.topology, "scheduler": self.opts.scheduler,
                "seed": self.opts.seed,
                "options": {k: str(v) for k, v in self.opts.__dict__.items()},
                "jobs": [j.__dict__ | {"tasks": [t.__dict__ for t in j.tasks]}
                         for j in self.jobs],
                "spin_per_s": self.spin_per_s, "node_speeds_gops": self.speeds,
                "versions": {"python": platform.python_version(), **versions},
                "host": {"uname": " ".join(platform.uname()), "cpus": os.cpu_count()},
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run(name: str | None, jobs_file: str | Path, opts: RunOptions,
        progress: Progress = lambda s: None) -> pd.DataFrame:
    """`testbed run`: one experiment on the running testbed `name`."""
    from testbed.schedulers.jobs import load_jobs

    ledger = api.resolve(name)
    if build.ensure_controller(ledger):
        progress("the controller was dead or stuck: restarted it")
    topo = Topology.from_dict(ledger.topology, ledger.topology_file)
    jobset = load_jobs(jobs_file, topo, seed=opts.seed)
    if opts.compute not in ("synthetic", "torch"):
        raise InputError(f"--compute {opts.compute!r}: use synthetic or torch")
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    return Runner(ledger, list(jobset.jobs), opts, progress).run()
